"""Read the icons of the npm package ``doodle-icons`` back into standalone SVG strings.

The package ships no SVG files: it is a React bundle made by SVGR, and each icon is a component whose SVG
markup survives only as ``jsxRuntime`` calls. ``build/index.js`` (CommonJS) looks like::

    var SvgPlane = function (props) { return (jsxRuntime.jsxs("svg", __assign({ viewBox: "0 0 150 150",
        xmlns: "http://www.w3.org/2000/svg" }, props, { children: [jsxRuntime.jsx("path", { d: "M3 5..." },
        void 0), ...] }), void 0)); };
    var index$2 = /*#__PURE__*/Object.freeze({ __proto__: null, Plane: SvgPlane, ... });
    exports.Misc = index$2;

so an icon is named ``"Misc/Plane"``. A small tokenizer and recursive-descent reader handle the JS subset
these statements use (calls, object and array literals, strings, numbers, ``void 0``); ``__assign`` merges
objects left to right like ``Object.assign``, and the caller's ``props`` are empty for a standalone SVG.
Nothing is evaluated: string literals (double-quoted, JSON-compatible) go through ``json.loads``. React's
camelCase props are mapped back to SVG attribute names (``strokeWidth`` -> ``stroke-width``).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

# The tarball member with the bundle, without npm's leading "package/".
DOODLE_BUNDLE = "build/index.js"

_TOKEN = re.compile(
    r"""(?P<skip>\s+|/\*.*?\*/|//[^\n]*)
      | (?P<str>"(?:[^"\\\n]|\\.)*")
      | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*)
      | (?P<punct>[(){}\[\],:;])""",
    re.S | re.X,
)
_CONSTANTS: dict[str, Any] = {"null": None, "undefined": None, "true": True, "false": False}
_JSX = ("jsxRuntime.jsx", "jsxRuntime.jsxs")
_QUOT = {'"': "&quot;"}  # attribute values are always written in double quotes

# Statement heads of the bundle; the reader takes over after each. The loose pattern counts components so
# that a head written differently fails loudly instead of dropping icons.
_COMPONENT = re.compile(r"^var ([\w$]+) = function \(props\) \{ return \(", re.M)
_ANY_COMPONENT = re.compile(r"function\s*\(\s*props\s*\)")
_INDEX = re.compile(r"^var ([\w$]+) = (?:/\*#__PURE__\*/)?Object\.freeze\(", re.M)
_EXPORT = re.compile(r"^exports\.([\w$]+) = ([\w$]+);", re.M)

# SVG attributes that are camelCase in SVG itself; every other camelCase prop is a kebab-case attribute.
_CAMEL_IN_SVG = frozenset(
    "viewBox preserveAspectRatio gradientUnits gradientTransform patternUnits patternContentUnits "
    "patternTransform clipPathUnits maskUnits maskContentUnits markerUnits markerWidth markerHeight refX "
    "refY filterUnits primitiveUnits stdDeviation baseFrequency numOctaves pathLength spreadMethod "
    "textLength lengthAdjust startOffset tableValues kernelMatrix surfaceScale specularExponent".split()
)
_RENAMED = {
    "className": "class",
    "xlinkHref": "xlink:href",
    "xlinkTitle": "xlink:title",
    "xmlnsXlink": "xmlns:xlink",
    "xmlSpace": "xml:space",
    "xmlLang": "xml:lang",
}


class _Name(NamedTuple):
    name: str
    pos: int


class _Call(NamedTuple):
    name: str
    args: list[Any]
    pos: int


def _error(text: str, pos: int, what: str) -> ValueError:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return ValueError(
        f"doodle-icons bundle, line {line} column {col} (offset {pos}): {what}; "
        f"the text there reads {text[pos : pos + 60]!r}. Is it the package's {DOODLE_BUNDLE}?"
    )


class _Reader:
    """Recursive descent over the bundle's expression subset, starting at ``pos``."""

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def _skip(self) -> None:
        while (m := _TOKEN.match(self.text, self.pos)) and m.lastgroup == "skip":
            self.pos = m.end()

    def peek(self) -> tuple[str, str, int]:
        """``(kind, token, start)`` of the next token without consuming it; kind "end" at the end."""
        self._skip()
        if self.pos >= len(self.text):
            return "end", "", self.pos
        m = _TOKEN.match(self.text, self.pos)
        if m is None:
            raise _error(self.text, self.pos, f"unexpected character {self.text[self.pos]!r}")
        return m.lastgroup or "", m.group(), self.pos

    def take(self, want: str | None = None) -> tuple[str, str, int]:
        kind, tok, start = self.peek()
        if kind == "end":
            raise _error(self.text, start, f"unexpected end of the bundle (wanted {want or 'a value'!r})")
        if want is not None and tok != want:
            raise _error(self.text, start, f"expected {want!r} but found {tok!r}")
        self.pos = start + len(tok)
        return kind, tok, start

    def _at(self, tok: str) -> bool:
        return self.peek()[1] == tok

    def _items(self, close: str, item: Any) -> None:
        """Comma-separated ``item()`` calls up to ``close``; a trailing comma is allowed, as in JS."""
        while not self._at(close):
            item()
            if not self._at(close):
                self.take(",")
        self.take(close)

    def value(self) -> Any:
        kind, tok, start = self.take()
        if kind == "str":
            return json.loads(tok)
        if kind == "num":
            return float(tok) if any(c in tok for c in ".eE") else int(tok)
        if tok == "{":
            obj: dict[str, Any] = {}

            def entry() -> None:
                k_kind, key, k_start = self.take()
                if k_kind not in ("name", "str") or "." in key:
                    raise _error(self.text, k_start, f"expected a property name but found {key!r}")
                self.take(":")
                obj[json.loads(key) if k_kind == "str" else key] = self.value()

            self._items("}", entry)
            return obj
        if tok == "[":
            arr: list[Any] = []
            self._items("]", lambda: arr.append(self.value()))
            return arr
        if kind == "name":
            if tok == "void":  # `void 0` is undefined
                self.value()
                return None
            if tok in _CONSTANTS:
                return _CONSTANTS[tok]
            if self._at("("):
                self.take("(")
                args: list[Any] = []
                self._items(")", lambda: args.append(self.value()))
                return _Call(tok, args, start)
            return _Name(tok, start)
        raise _error(self.text, start, f"unexpected {tok!r}")


def _attr_name(prop: str) -> str:
    if prop in _RENAMED:
        return _RENAMED[prop]
    if prop in _CAMEL_IN_SVG:
        return prop
    return re.sub(r"[A-Z]", lambda m: "-" + m.group().lower(), prop)


def _js_number(v: int | float) -> str:
    """A number as JS's String() writes it, for the values these icons can hold (2, 1.5, -0.25)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _props(node: Any, text: str, at: int) -> dict[str, Any]:
    if isinstance(node, dict):
        return dict(node)
    if isinstance(node, _Call) and node.name == "__assign":
        merged: dict[str, Any] = {}
        for part in node.args:
            if isinstance(part, dict):
                merged.update(part)
            elif not (isinstance(part, _Name) and part.name == "props"):  # the caller's props: none here
                raise _error(
                    text, getattr(part, "pos", node.pos), "__assign of something other than an object"
                )
        return merged
    raise _error(text, getattr(node, "pos", at), f"expected element props, found {node!r:.40}")


def _render(node: Any, text: str, at: int) -> str:
    """SVG markup of a JSX node; ``at`` is the enclosing call's offset, for errors on nodes without one."""
    if node is None or node is False:  # React renders nothing for these
        return ""
    if isinstance(node, str):
        return escape(node)
    if isinstance(node, list):
        return "".join(_render(child, text, at) for child in node)
    if not (isinstance(node, _Call) and node.name in _JSX):
        raise _error(text, getattr(node, "pos", at), f"expected a jsxRuntime.jsx(s) call, found {node!r:.40}")
    if len(node.args) not in (2, 3) or not isinstance(node.args[0], str):
        raise _error(text, node.pos, f"{node.name} wants (tag, props[, key])")
    tag = node.args[0]
    props = _props(node.args[1], text, node.pos)
    children = props.pop("children", None)
    attrs = []
    for prop, v in props.items():
        if v is None or isinstance(v, bool):  # React drops null/undefined; no icon uses boolean attributes
            continue
        if isinstance(v, (int, float)):
            v = _js_number(v)
        elif not isinstance(v, str):
            raise _error(text, node.pos, f"<{tag}> prop {prop!r} is not a string or number")
        attrs.append(f' {_attr_name(prop)}="{escape(v, _QUOT)}"')
    return f"<{tag}{''.join(attrs)}>{_render(children, text, node.pos)}</{tag}>"


def _end_statement(reader: _Reader, *tokens: str) -> None:
    for tok in tokens:
        reader.take(tok)


def doodle_svgs(bundle_js: str) -> dict[str, str]:
    """``{"Category/Name": standalone SVG string}`` for every icon in doodle-icons' ``build/index.js``."""
    text = bundle_js
    components: dict[str, str] = {}
    for m in _COMPONENT.finditer(text):
        reader = _Reader(text, m.end())
        root = reader.value()
        if not (isinstance(root, _Call) and root.args and root.args[0] == "svg"):
            raise _error(text, m.end(), f"component {m.group(1)} does not return an <svg> element")
        components[m.group(1)] = _render(root, text, m.end())
        _end_statement(reader, ")", ";", "}", ";")
    found = len(_ANY_COMPONENT.findall(text))
    if found != len(components):
        raise ValueError(
            f"doodle-icons bundle: {found} component functions but {len(components)} in the expected form "
            f"'var SvgName = function (props) {{ return (...); }};'. Is it the package's {DOODLE_BUNDLE}?"
        )
    indexes: dict[str, dict[str, str]] = {}
    for m in _INDEX.finditer(text):
        reader = _Reader(text, m.end())
        members = reader.value()
        if not isinstance(members, dict):
            raise _error(text, m.end(), f"{m.group(1)} does not freeze an object literal")
        _end_statement(reader, ")", ";")
        icons: dict[str, str] = {}
        for name, ref in members.items():
            if name == "__proto__":
                continue
            if not (isinstance(ref, _Name) and ref.name in components):
                raise _error(
                    text, getattr(ref, "pos", m.end()), f"{m.group(1)}.{name} is not a known component"
                )
            icons[name] = components[ref.name]
        indexes[m.group(1)] = icons
    out: dict[str, str] = {}
    for m in _EXPORT.finditer(text):
        category, index = m.groups()
        if index not in indexes:
            raise _error(text, m.start(2), f"exports.{category} names {index}, which is no icon index")
        for name, svg in indexes[index].items():
            out[f"{category}/{name}"] = svg
    if not out:
        raise ValueError(
            f"doodle-icons bundle: no exported icons found. Is it the package's {DOODLE_BUNDLE}?"
        )
    return out
