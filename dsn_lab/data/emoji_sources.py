"""The npm packages EmojiSketch is built from: pinned, fetched, verified, read and rasterised.

Why npm: the registry is reachable where dataset sites are not (CI, locked-down labs), every tarball has a
sha512 ``integrity`` string, and versions are immutable — so a pinned (name, version, integrity) triple names
exactly one set of bytes. The pins are data, in ``dsn_lab/resources/emojisketch.json`` (with the split tables
of :mod:`.emojisketch`). We obtain a tarball with ``npm pack`` when npm is installed, otherwise with the
package's one downloader (:func:`dsn_lab.data.fetch.download`) from the registry's tarball URL, and in both
cases check it against the pinned integrity string (a mismatch raises :class:`~.fetch.ChecksumError`).

Rendering: Iconify JSON sets (``@iconify-json/*``) store each icon as an SVG body plus a viewBox; aliases
point at a parent icon and may add flips and quarter turns. OpenMoji ships plain SVG files, Fluent 3D ships
WebP. Everything is drawn onto white (transparent pixels would otherwise turn black in RGB and become a
domain cue).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from PIL import Image

from dsn_lab._cache import cache_home
from dsn_lab.data.fetch import INTEGRITY_ALGORITHMS, ChecksumError, DownloadError, download, verify_file
from dsn_lab.data.tables import PROSE, MapOf, load_table, resource_label, table_error

DEFAULT_REGISTRY = "https://registry.npmjs.org"
RECIPE_RESOURCE = "emojisketch.json"  # the packages here, the split tables in .emojisketch
KINDS = ("openmoji", "iconify", "webp")


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package. ``family`` names the emoji design (two sets of one family are not
    independent photos of a concept)."""

    key: str  # short id used in file names: "openmoji", "noto", ...
    name: str  # npm name
    version: str
    integrity: str  # "sha512-<base64>" as in the registry's dist.integrity
    license: str  # SPDX id we expect in the package metadata
    family: str
    title: str
    kind: str  # "openmoji" | "iconify" | "webp"
    # Sets without a codepoint table are matched by name; such a set was drawn before later emoji existed, so
    # a name match for a newer emoji can only be an older character that had that name (Firefox OS "window"
    # is U+1F5D4 desktop window, not U+1FA9F). Newest emoji version the set covers (checked by eye).
    max_emoji_version: float | None = None

    @property
    def tarball_name(self) -> str:
        """The file name ``npm pack`` writes: ``@scope/name`` -> ``scope-name-<version>.tgz``."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def tarball_url(self) -> str:
        registry = os.environ.get("DSN_LAB_NPM_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
        base = self.name.split("/")[-1]
        return f"{registry}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGE_SCHEMA = {
    "key": str,
    "name": str,
    "version": str,
    "integrity": str,
    "license": str,
    "family": str,
    "title": str,
    "kind": str,
    "max_emoji_version?": float,
}
# The whole recipe file: .emojisketch reads the tables with this same schema.
RECIPE_SCHEMA = {
    "about": PROSE,
    "notes": MapOf(PROSE),
    "sketch_package": PACKAGE_SCHEMA,
    "photo_packages": [PACKAGE_SCHEMA],
    "openmoji_groups": [str],
    "sketchy_to_emoji": MapOf(str),
    "sketchy_without_emoji": [str],
    "near_duplicates": MapOf([str]),
    "subgroup_near_duplicates": MapOf(str),
    "not_near_duplicates": [str],
    "name_match_blocklist": MapOf([str]),
}


def _package(entry: dict[str, Any], where: str) -> NpmPackage:
    label = resource_label(RECIPE_RESOURCE)
    if entry["kind"] not in KINDS:
        raise table_error(label, f"{where}.kind", f"one of {KINDS}", entry["kind"])
    if entry["integrity"].split("-", 1)[0] not in INTEGRITY_ALGORITHMS:
        raise table_error(
            label, f"{where}.integrity", "an npm integrity 'sha512-<base64>'", entry["integrity"]
        )
    return NpmPackage(**entry)


def _load_packages() -> tuple[NpmPackage, tuple[NpmPackage, ...]]:
    data = load_table(RECIPE_RESOURCE, RECIPE_SCHEMA)
    sketch = _package(data["sketch_package"], "sketch_package")
    photos = tuple(_package(e, f"photo_packages[{i}]") for i, e in enumerate(data["photo_packages"]))
    keys = [sketch.key, *(p.key for p in photos)]
    if len(set(keys)) != len(keys):
        raise table_error(
            resource_label(RECIPE_RESOURCE), "photo_packages", "a different key per package", keys
        )
    return sketch, photos


SKETCH_PACKAGE: NpmPackage  # OpenMoji's black line art: the sketches
PHOTO_PACKAGES: tuple[NpmPackage, ...]  # colour sets = photos, each a design of its own
SKETCH_PACKAGE, PHOTO_PACKAGES = _load_packages()
ALL_PACKAGES: tuple[NpmPackage, ...] = (SKETCH_PACKAGE, *PHOTO_PACKAGES)


# ---------------------------------------------------------------------------------------------------
# fetching
# ---------------------------------------------------------------------------------------------------
def npm_cache_dir() -> Path:
    """``<cache home>/npm``: the verified tarballs, shared by every build."""
    return cache_home() / "npm"


def _npm_pack(pkg: NpmPackage, dest_dir: Path) -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        proc = subprocess.run(
            [npm, "pack", f"{pkg.name}@{pkg.version}", "--silent"],
            cwd=dest_dir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = dest_dir / pkg.tarball_name
    if proc.returncode != 0 or not out.is_file():
        return None
    return out


def fetch_package(
    pkg: NpmPackage, cache_dir: Path | None = None, *, use_npm: bool | None = None, progress: bool = True
) -> Path:
    """The verified tarball of ``pkg`` in the cache, fetching it first if needed.

    ``use_npm``: None tries ``npm pack`` when npm is on PATH and falls back to the registry's tarball URL
    (:func:`~dsn_lab.data.fetch.download`: resumable, verified, atomic); False uses the URL only. A cached
    file that fails the integrity check is replaced; a fresh one that fails raises
    :class:`~dsn_lab.data.fetch.ChecksumError` and leaves nothing at the final path.
    """
    cache = Path(cache_dir) if cache_dir is not None else npm_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / pkg.tarball_name
    if final.is_file():
        try:
            verify_file(final, integrity=pkg.integrity)
            return final
        except ChecksumError:
            final.unlink()
    if use_npm is not False:
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
            got = _npm_pack(pkg, Path(tmp))
            if got is not None:
                verify_file(got, integrity=pkg.integrity, label=f"npm pack {pkg.name}@{pkg.version}")
                os.replace(got, final)
                return final
    try:
        return download(pkg.tarball_url, final, integrity=pkg.integrity, progress=progress)
    except DownloadError as exc:
        raise DownloadError(
            f"{exc}\nEmojiSketch needs the npm registry once (then the tarballs are cached in {cache}). Fix: "
            "check the network or proxy, or set $DSN_LAB_NPM_REGISTRY to a mirror; or copy the tarball "
            f"(npm pack {pkg.name}@{pkg.version}) into that folder."
        ) from exc


# ---------------------------------------------------------------------------------------------------
# reading tarballs
# ---------------------------------------------------------------------------------------------------
def read_members(tarball: Path, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Files of an npm tarball whose path (without the leading ``package/``) passes ``want``."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.split("/", 1)[1] if "/" in m.name else m.name
                if want(name):
                    f = tar.extractfile(m)
                    if f is not None:
                        out[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ChecksumError(
            f"{tarball}: not a readable npm tarball ({exc}). Delete it and build again."
        ) from exc
    return out


def package_license(files: dict[str, bytes]) -> str:
    """The licence a package declares: Iconify's ``info.json`` spdx when present, else package.json."""
    if "info.json" in files:
        spdx = json.loads(files["info.json"]).get("license", {}).get("spdx")
        if spdx:
            return str(spdx)
    return str(json.loads(files["package.json"]).get("license", ""))


# ---------------------------------------------------------------------------------------------------
# codepoints
# ---------------------------------------------------------------------------------------------------
_HEX = re.compile(r"^[0-9A-F]{2,6}$")


def normalise_codepoints(text: str) -> str:
    """Canonical hexcode key: uppercase, ``-`` separated, no U+FE0F (variation selector), no padding zeros.

    Fluent names files ``2708-fe0f``, OpenMoji ``2708``, Iconify chars ``2708``: all become ``2708``.
    Accepts ``_`` or spaces or ``U+`` prefixes too; raises ValueError on anything that is not hex.
    """
    parts = [p for p in re.split(r"[-_\s]+", text.strip().upper()) if p]
    out = []
    for p in parts:
        p = p.removeprefix("U+")
        if not _HEX.match(p):
            raise ValueError(f"Not a codepoint sequence: {text!r}.")
        if p.lstrip("0") == "FE0F":
            continue
        out.append(format(int(p, 16), "04X"))
    if not out:
        raise ValueError(f"No codepoint in {text!r}.")
    return "-".join(out)


def is_single_codepoint(key: str) -> bool:
    return "-" not in key


# ---------------------------------------------------------------------------------------------------
# Iconify sets
# ---------------------------------------------------------------------------------------------------
_TRANSFORM_KEYS = ("rotate", "hFlip", "vFlip")


def resolve_icon(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Full icon properties of ``name`` in an Iconify JSON set, following aliases; None if unknown.

    As in Iconify's own merge: along the alias chain quarter turns add up (mod 4) and flips toggle, other
    properties (left, top, width, height, body) come from the nearest definition; defaults are the set's
    ``width``/``height`` (16 when absent), ``left``/``top`` 0. Alias loops return None.
    """
    icons, aliases = data.get("icons", {}), data.get("aliases", {})
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    cur = name
    while cur not in icons:
        if cur not in aliases or cur in seen or len(seen) > 32:
            return None
        seen.add(cur)
        chain.append(aliases[cur])
        cur = aliases[cur].get("parent")
        if not isinstance(cur, str):
            return None
    props: dict[str, Any] = {
        "left": data.get("left", 0),
        "top": data.get("top", 0),
        "width": data.get("width", 16),
        "height": data.get("height", 16),
        "rotate": 0,
        "hFlip": False,
        "vFlip": False,
    }
    for layer in [icons[cur], *reversed(chain)]:  # root first, the alias the caller named last
        for k, v in layer.items():
            if k == "parent":
                continue
            if k == "rotate":
                props["rotate"] = (props["rotate"] + int(v)) % 4
            elif k in ("hFlip", "vFlip"):
                props[k] = props[k] != bool(v)
            else:
                props[k] = v
    return props


def icon_svg(props: dict[str, Any]) -> str:
    """A standalone SVG document for resolved icon properties (see :func:`resolve_icon`), flips applied."""
    left, top = float(props["left"]), float(props["top"])
    width, height = float(props["width"]), float(props["height"])
    body = props["body"]
    transforms: list[str] = []
    rotate = int(props.get("rotate", 0)) % 4
    h_flip, v_flip = bool(props.get("hFlip")), bool(props.get("vFlip"))
    if h_flip and v_flip:
        rotate = (rotate + 2) % 4
    elif h_flip:
        transforms.append(f"translate({width + left:g} {-top:g}) scale(-1 1)")
        left = top = 0.0
    elif v_flip:
        transforms.append(f"translate({-left:g} {height + top:g}) scale(1 -1)")
        left = top = 0.0
    if rotate == 1:
        c = height / 2 + top
        transforms.insert(0, f"rotate(90 {c:g} {c:g})")
    elif rotate == 2:
        transforms.insert(0, f"rotate(180 {width / 2 + left:g} {height / 2 + top:g})")
    elif rotate == 3:
        c = width / 2 + left
        transforms.insert(0, f"rotate(-90 {c:g} {c:g})")
    if rotate % 2 == 1:
        left, top, width, height = top, left, height, width
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width:g}" height="{height:g}" viewBox="{left:g} {top:g} {width:g} {height:g}">{body}</svg>'
    )


def renders_standalone(body: str) -> bool:
    """False for an SVG body styled by CSS classes it does not define (it would render as black shapes)."""
    return not ("class=" in body and "<style" not in body)


def iconify_names(data: dict[str, Any]) -> set[str]:
    """Every icon and alias name of a set, hidden ones included (old names are still valid look-ups)."""
    return set(data.get("icons", {})) | set(data.get("aliases", {}))


# ---------------------------------------------------------------------------------------------------
# rasterising
# ---------------------------------------------------------------------------------------------------
def on_white(img: Image.Image, size: int) -> Image.Image:
    """Fit ``img`` (any mode) into a ``size``x``size`` RGB square on white, centred, aspect kept."""
    img = img.convert("RGBA")
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(img, ((size - nw) // 2, (size - nh) // 2))
    return canvas.convert("RGB")


SVG_RENDERER_PIP = "resvg-py"


def _resvg() -> Any:
    try:  # lazy: a compiled wheel; a platform without it should get the fix below, not an import error
        import resvg_py
    except ImportError as exc:
        raise RuntimeError(
            f"{SVG_RENDERER_PIP} cannot be imported ({exc}). EmojiSketch rasterises its SVG images with it. "
            f"Fix: pip install {SVG_RENDERER_PIP} (a self-contained wheel: no system library needed)."
        ) from exc
    return resvg_py


def svg_renderer() -> str:
    """Name and version of the SVG renderer. It decides the pixels of every SVG image, so EmojiSketch's
    recipe hash includes it: a build made by another renderer (or version) is rebuilt, never mixed."""
    r = _resvg()
    version = getattr(r, "__version__", None)
    if version is None:
        version = dist_version(SVG_RENDERER_PIP)
    return f"{SVG_RENDERER_PIP} {version} (resvg {getattr(r, '__resvg_version__', '?')})"


def rasterise_svg(svg: str | bytes, size: int) -> Image.Image:
    """Render an SVG with resvg so that its longer side is ``size`` px, then put it on white.

    resvg (Rust, in the ``resvg-py`` wheel) replaced cairosvg, which needs the system cairo library. On
    EmojiSketch's 3,789 SVGs the two differ by 0.25/255 on average (0.05 % of pixels by more than 16/255);
    the largest differences are cairosvg ignoring ``opacity`` on ``<use>`` (``benchmarks/bench_render.py``).
    """
    resvg = _resvg()
    text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
    # Render at 2x and downsample: thin strokes come out smoother than a direct small render. Only the width
    # is given, so resvg keeps the aspect ratio; on_white fits the longer side. System fonts are skipped so
    # that the pixels never depend on the machine (no EmojiSketch SVG has text).
    try:
        png = resvg.svg_to_bytes(svg_string=text, width=2 * size, skip_system_fonts=True)
    except ValueError as exc:  # resvg's parse errors
        raise ValueError(f"Cannot render this SVG ({exc}); it starts {text[:80]!r}.") from exc
    return on_white(Image.open(io.BytesIO(bytes(png))), size)


def rasterise_bitmap(data: bytes, size: int) -> Image.Image:
    """Decode a WebP/PNG and put it on white at ``size`` px."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return on_white(im, size)


def save_png_atomic(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


def ensure_packages(
    packages: Iterable[NpmPackage] = ALL_PACKAGES, cache_dir: Path | None = None, progress: bool = True
) -> dict[str, Path]:
    """Fetch (or find in the cache) every package; ``{key: tarball path}``."""
    return {p.key: fetch_package(p, cache_dir, progress=progress) for p in packages}
