"""dsn_lab/data/emoji_lineart.py: EmojiSketch v2's line-art tables and how one icon is drawn."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest

from dsn_lab.data import emoji_lineart as el
from dsn_lab.data import emoji_sources as es
from dsn_lab.data import emojisketch as ek
from dsn_lab.data.tables import ResourceError, check


def test_table_loads_with_distinct_sets_and_sane_matches() -> None:
    assert len(el.LINEART_SETS) == 10
    keys = [s.key for s in el.LINEART_SETS]
    v1_keys = {p.key for p in es.ALL_PACKAGES}
    assert len(set(keys)) == len(keys) and not set(keys) & v1_keys  # file names say the source
    for s in el.LINEART_SETS:
        assert s.accepted, s.key
        assert 0.0 < s.stroke_scale <= 1.0
        # one icon drawing two concepts would make two classes share a sketch
        twice = [icon for icon, n in Counter(s.accepted.values()).items() if n > 1]
        assert not twice, (s.key, twice)
        assert s.package.family != es.SKETCH_PACKAGE.family  # another design than the v1 sketches
    assert el.PSEUDO_SKETCHES.method in el.PSEUDO_METHODS
    assert set(el.PSEUDO_SKETCHES.photo_sets) <= {p.key for p in es.PHOTO_PACKAGES}
    assert 0.0 <= el.PSEUDO_SKETCHES.low < el.PSEUDO_SKETCHES.high <= 1.0


def test_every_eye_check_is_recorded_once() -> None:
    """A concept's icon is either accepted or rejected in a set, never both (the record of the eye check)."""
    raw = el.LINEART_TABLES["lineart_packages"]
    for entry in raw:
        for hexcode, (icon, why) in entry.get("rejected", {}).items():
            assert entry["accepted"].get(hexcode) != icon, (entry["key"], hexcode)
            assert why.strip(), (entry["key"], hexcode)


def test_schema_rejects_a_bad_edit() -> None:
    data = copy.deepcopy(el.LINEART_TABLES)
    check(data, el.LINEART_SCHEMA, "t", "")
    del data["lineart_packages"][0]["accepted"]
    with pytest.raises(ResourceError, match=r"lineart_packages\[0\]\.accepted"):
        check(data, el.LINEART_SCHEMA, "t", "")
    data = copy.deepcopy(el.LINEART_TABLES)
    data["pseudo_sketches"]["low"] = "0.2"
    with pytest.raises(ResourceError, match="pseudo_sketches.low"):
        check(data, el.LINEART_SCHEMA, "t", "")


def _square_set(stroke_scale: float) -> tuple[dict, el.LineartSet]:
    """An Iconify set of one stroke-drawn square, edge to edge, 2 units wide on a 24 grid (like tabler)."""
    icons = {
        "width": 24,
        "height": 24,
        "icons": {
            "box": {
                "body": '<path fill="none" stroke="currentColor" stroke-width="2" d="M1 1h22v22H1z"/>',
            }
        },
    }
    pkg = es.NpmPackage("box", "@x/box", "1.0.0", "sha512-x", "MIT", "box", "Box", "iconify")
    return icons, el.LineartSet(pkg, {"25A1": "box"}, stroke_scale)


def _ink(img) -> np.ndarray:
    return np.asarray(img.convert("L")) < 128


def test_render_pads_and_thins_strokes() -> None:
    icons, full = _square_set(1.0)
    _, thin = _square_set(0.5)
    size, pad = 112, 0.1
    a = _ink(el.render_lineart(icons, full, "box", size, pad=pad))
    b = _ink(el.render_lineart(icons, thin, "box", size, pad=pad))
    margin = round(size * pad)
    for ink in (a, b):  # a white frame of `pad` of the side, then the square's outline
        assert not ink[: margin - 1].any() and not ink[:, : margin - 1].any()
        assert not ink[-(margin - 1) :].any() and not ink[:, -(margin - 1) :].any()
        assert ink[size // 2, margin : margin + 4].any()  # the left side of the square
        assert not ink[margin + 12 : -margin - 12, margin + 12 : -margin - 12].any()  # hollow
    # the square's side at 112 px, padded: (112 - 2 * 11) / 24 px per unit; 2 units -> ~7.5 px, 1 unit -> ~3.8
    width_full = int(a[size // 2].sum()) / 2
    width_thin = int(b[size // 2].sum()) / 2
    assert 6 <= width_full <= 9 and 3 <= width_thin <= 5
    assert 0.4 < b.sum() / a.sum() < 0.6


def test_render_without_pad_fills_the_canvas() -> None:
    icons, full = _square_set(1.0)
    ink = _ink(el.render_lineart(icons, full, "box", 112, pad=0.0))
    assert ink[56, :4].any() and ink[56, -4:].any()


def test_render_names_an_unknown_icon() -> None:
    icons, full = _square_set(1.0)
    with pytest.raises(RuntimeError, match="'nope'"):
        el.render_lineart(icons, full, "nope", 112)


def test_v2_recipe_hash_covers_the_lineart_tables_and_leaves_v1_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = ek.recipe_hash(version=1), ek.recipe_hash(version=2)
    assert v1 != v2
    edited = json.loads(json.dumps(el.LINEART_TABLES))
    edited["lineart_pad"] = 0.2
    monkeypatch.setattr(ek, "LINEART_TABLES", edited)
    assert ek.recipe_hash(version=1) == v1  # a v1 cache stays valid whatever v2's tables say
    assert ek.recipe_hash(version=2) != v2
    with pytest.raises(ValueError, match="version must be one of"):
        ek.default_emojisketch_root(version=3)
