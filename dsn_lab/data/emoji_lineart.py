"""EmojiSketch v2's extra sketches: line art from other icon sets, and pseudo-sketches drawn from photos.

v1 has one sketch per concept (OpenMoji's black line art), so a sketch class has no spread and DSN's memory
bank (which fights the intra-class diversity of sketches) has nothing to act on. v2 adds, per concept:

- **line art from independent outline sets** (Iconify JSON sets and ``doodle-icons`` on npm), matched to the
  concepts by codepoint or by name and every match checked by eye (contact sheets; the accepted and rejected
  icons are tables in ``dsn_lab/resources/emojisketch_v2.json``);
- **pseudo-sketches** of the training concepts: edge maps of their colour renderings (HED, see
  :mod:`.hed`, or Canny). Only training concepts get them: an unseen concept's edge map would be drawn from
  the very photo it is to retrieve.

The pins and tables are data (the recipe hash of a v2 build covers them); this module loads and checks them
and renders one icon. :mod:`.emojisketch` decides which image goes into which split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dsn_lab.data.doodle import DOODLE_BUNDLE, doodle_svgs
from dsn_lab.data.emoji_sources import (
    PACKAGE_SCHEMA,
    NpmPackage,
    icon_svg,
    package_license,
    rasterise_svg,
    read_members,
    resolve_icon,
)
from dsn_lab.data.fetch import INTEGRITY_ALGORITHMS
from dsn_lab.data.tables import PROSE, MapOf, load_table, resource_label, table_error

LINEART_RESOURCE = "emojisketch_v2.json"
LINEART_KINDS = ("iconify", "doodle")
PSEUDO_METHODS = ("hed", "canny", "none")

_SET_SCHEMA = {
    **PACKAGE_SCHEMA,
    "match_by": str,
    "variant_rule?": PROSE,
    "stroke_scale?": float,  # stroke-drawn sets: widths x this, so a line is as heavy as OpenMoji's
    "accepted": MapOf(str),  # hexcode -> icon name, checked by eye
    "rejected?": MapOf([str]),  # hexcode -> [icon name, why]: the record of what the eye check threw out
}
LINEART_SCHEMA = {
    "about": PROSE,
    "notes": MapOf(PROSE),
    "lineart_packages": [_SET_SCHEMA],
    "lineart_pad": float,
    "pseudo_sketches": {"method": str, "photo_sets": [str], "input_size": int, "low": float, "high": float},
}


@dataclass(frozen=True)
class LineartSet:
    """One line-art set: its pinned package and the concepts it draws (``{hexcode: icon name}``)."""

    package: NpmPackage
    accepted: dict[str, str]
    stroke_scale: float = 1.0

    @property
    def key(self) -> str:
        return self.package.key


@dataclass(frozen=True)
class PseudoSketchRecipe:
    """How training photos become pseudo-sketches (``method`` "hed", "canny" or "none")."""

    method: str
    photo_sets: tuple[str, ...]  # which colour sets are drawn from (keys of the v1 photo packages)
    input_size: int  # the edge detector sees the rendering at this size; the result is resized to 112 px
    low: float  # HED edge probability below which a pixel stays white ...
    high: float  # ... and above which it is full ink (linear between; hed.edge_ink)


def _load() -> tuple[tuple[LineartSet, ...], PseudoSketchRecipe, dict[str, Any]]:
    data = load_table(LINEART_RESOURCE, LINEART_SCHEMA)
    label = resource_label(LINEART_RESOURCE)
    sets: list[LineartSet] = []
    for i, entry in enumerate(data["lineart_packages"]):
        where = f"lineart_packages[{i}]"
        if entry["kind"] not in LINEART_KINDS:
            raise table_error(label, f"{where}.kind", f"one of {LINEART_KINDS}", entry["kind"])
        if entry["integrity"].split("-", 1)[0] not in INTEGRITY_ALGORITHMS:
            raise table_error(label, f"{where}.integrity", "an npm integrity 'sha512-<base64>'")
        for hexcode in entry["accepted"]:
            if not re.fullmatch(r"[0-9A-F]{4,6}", hexcode):
                raise table_error(label, f"{where}.accepted.{hexcode}", "an upper-case hex codepoint")
        pkg = NpmPackage(
            **{k: v for k, v in entry.items() if k in PACKAGE_SCHEMA or f"{k}?" in PACKAGE_SCHEMA}
        )
        sets.append(LineartSet(pkg, dict(entry["accepted"]), float(entry.get("stroke_scale", 1.0))))
    keys = [s.key for s in sets]
    if len(set(keys)) != len(keys):
        raise table_error(label, "lineart_packages", "a different key per package", keys)
    p = data["pseudo_sketches"]
    if p["method"] not in PSEUDO_METHODS:
        raise table_error(label, "pseudo_sketches.method", f"one of {PSEUDO_METHODS}", p["method"])
    pseudo = PseudoSketchRecipe(
        p["method"], tuple(p["photo_sets"]), int(p["input_size"]), float(p["low"]), float(p["high"])
    )
    return tuple(sets), pseudo, data


LINEART_SETS: tuple[LineartSet, ...]
PSEUDO_SKETCHES: PseudoSketchRecipe
LINEART_TABLES: dict[str, Any]  # the whole file as loaded (a v2 recipe hash covers it)
LINEART_SETS, PSEUDO_SKETCHES, LINEART_TABLES = _load()


# ---------------------------------------------------------------------------------------------------
# reading and rendering
# ---------------------------------------------------------------------------------------------------
def read_lineart(tarball: Path, line_set: LineartSet) -> tuple[dict[str, Any], str]:
    """``(icons, licence)`` of one set's tarball: the Iconify JSON (``kind`` iconify) or ``{name: svg}``
    (doodle-icons, whose React components carry their SVG markup as JSX in ``build/index.js``)."""
    kind = line_set.package.kind
    if kind == "iconify":
        files = read_members(tarball, lambda n: n in ("package.json", "icons.json"))
        if "icons.json" not in files:
            raise RuntimeError(f"{tarball}: no icons.json; is it an @iconify-json package?")
        return json.loads(files["icons.json"]), package_license(files)
    files = read_members(tarball, lambda n: n in ("package.json", DOODLE_BUNDLE))
    if DOODLE_BUNDLE not in files:
        raise RuntimeError(f"{tarball}: no {DOODLE_BUNDLE}; is it the doodle-icons package?")
    return doodle_svgs(files[DOODLE_BUNDLE].decode("utf-8")), package_license(files)


LINEART_PAD: float = float(LINEART_TABLES["lineart_pad"])
_STROKE_WIDTH = re.compile(r'stroke-width="([0-9.]+)"')


def render_lineart(
    icons: dict[str, Any], line_set: LineartSet, icon: str, size: int, pad: float = LINEART_PAD
) -> Image.Image:
    """One accepted icon of ``line_set`` as a ``size`` px image, black on white.

    Icon sets draw edge to edge with pen strokes about three times OpenMoji's; left as they are, line weight
    alone would tell the sets apart. So every icon gets a white margin of ``pad`` of the side (OpenMoji's
    own art has one), and stroke-drawn sets get their stroke widths scaled (``stroke_scale`` in the table).
    """
    if line_set.package.kind == "iconify":
        props = resolve_icon(icons, icon)
        if props is None:
            raise RuntimeError(f"{line_set.package.name}: icon {icon!r} cannot be resolved")
        if line_set.stroke_scale != 1.0:
            scale = line_set.stroke_scale
            body = _STROKE_WIDTH.sub(lambda m: f'stroke-width="{float(m.group(1)) * scale:g}"', props["body"])
            props = {**props, "body": body}
        # stroke-only icons draw in currentColor, which resvg treats as black: what a pen would draw
        svg = icon_svg(props)
    elif icon in icons:
        svg = icons[icon]
    else:
        raise RuntimeError(f"{line_set.package.name}: no component {icon!r}")
    inner = max(1, round(size * (1.0 - 2.0 * pad)))
    art = rasterise_svg(svg, inner)
    page = Image.new("RGB", (size, size), (255, 255, 255))
    page.paste(art, ((size - inner) // 2, (size - inner) // 2))
    return page
