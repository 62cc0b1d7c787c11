"""The npm packages EmojiSketch is built from: pinned, fetched, verified, read and rasterised.

Why npm: the registry is reachable where dataset sites are not (CI, locked-down labs), every tarball has a
sha512 ``integrity`` string, and versions are immutable — so a pinned (name, version, integrity) triple names
exactly one set of bytes. We obtain a tarball with ``npm pack`` when npm is installed, otherwise with a plain
HTTPS GET of the registry's tarball URL, and in both cases check it against the integrity string pinned here.

Rendering: Iconify JSON sets (``@iconify-json/*``) store each icon as an SVG body plus a viewBox; aliases
point at a parent icon and may add flips and quarter turns. OpenMoji ships plain SVG files, Fluent 3D ships
WebP. Everything is drawn onto white (transparent pixels would otherwise turn black in RGB and become a
domain cue).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

DEFAULT_REGISTRY = "https://registry.npmjs.org"


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


# Integrity strings from `npm view NAME@VERSION dist.integrity`.
SKETCH_PACKAGE = NpmPackage(
    "openmoji",
    "openmoji",
    "17.0.0",
    "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
    "CC-BY-SA-4.0",
    "openmoji",
    "OpenMoji (black line art)",
    "openmoji",
)
# Colour sets = photos. Each is a design of its own: fluent-emoji-flat / @iconify-json/fluent-emoji share the
# Fluent 3D design and OpenMoji colour shares the sketches' drawings, so neither is here.
PHOTO_PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        "fluent3d",
        "@lobehub/fluent-emoji-3d",
        "1.1.0",
        "sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==",
        "MIT",
        "fluent",
        "Microsoft Fluent Emoji 3D (LobeHub build)",
        "webp",
    ),
    NpmPackage(
        "noto",
        "@iconify-json/noto",
        "1.2.9",
        "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw==",
        "Apache-2.0",
        "noto",
        "Google Noto Color Emoji",
        "iconify",
    ),
    NpmPackage(
        "twemoji",
        "@iconify-json/twemoji",
        "1.2.5",
        "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw==",
        "CC-BY-4.0",
        "twemoji",
        "Twemoji",
        "iconify",
    ),
    NpmPackage(
        "emojione",
        "@iconify-json/emojione",
        "1.2.3",
        "sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg==",
        "CC-BY-4.0",
        "emojione",
        "Emoji One (v2)",
        "iconify",
        3.0,
    ),
    NpmPackage(
        "fxemoji",
        "@iconify-json/fxemoji",
        "1.2.2",
        "sha512-UAasRaxzFUKfIGSmLwnoarsssA4LX0VLLuEmplIqM6ZNQqIQRtav8tZ4H1neTlBreXuMQyAifr5jP4kn78DpiQ==",
        "Apache-2.0",
        "fxemoji",
        "Mozilla Firefox OS Emoji",
        "iconify",
        1.0,
    ),
    NpmPackage(
        "streamline",
        "@iconify-json/streamline-emojis",
        "1.2.4",
        "sha512-iNr9T9XuZVTyQPJO8ZlLxBzPkpi7qMl+z1l0C31vpEMqhPMelth3n7CeWQYtixdetDPdI81yeG4ROqjWpYJE6A==",
        "CC-BY-4.0",
        "streamline",
        "Streamline Emojis",
        "iconify",
        1.0,
    ),
    NpmPackage(
        "notov1",
        "@iconify-json/noto-v1",
        "1.2.5",
        "sha512-/DsVMius69Q0fRS53z7QK1TROSuar606jiIx+laXtdsYGMXpf6LtHBx6CGfoo3UHHb/XpBsw+1L1x3eyPqMuVA==",
        "Apache-2.0",
        "noto-v1",
        "Google Noto Emoji, first (2015) design",
        "iconify",
        3.0,
    ),
)
ALL_PACKAGES: tuple[NpmPackage, ...] = (SKETCH_PACKAGE, *PHOTO_PACKAGES)


class IntegrityError(RuntimeError):
    """A downloaded or cached tarball does not match its pinned sha512 integrity string."""


class PackageFetchError(RuntimeError):
    """Neither ``npm pack`` nor the HTTPS download produced the tarball."""


# ---------------------------------------------------------------------------------------------------
# fetching
# ---------------------------------------------------------------------------------------------------
def npm_cache_dir() -> Path:
    """``$DSN_LAB_CACHE/npm`` or ``~/.cache/dsn_lab/npm``: the verified tarballs, shared by every build."""
    env = os.environ.get("DSN_LAB_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "dsn_lab") / "npm"


def integrity_of(path: Path, algorithm: str = "sha512") -> str:
    """The npm-style integrity string (``sha512-<base64 digest>``) of a file."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{algorithm}-{base64.b64encode(h.digest()).decode('ascii')}"


def check_integrity(path: Path, integrity: str) -> None:
    """Raise :class:`IntegrityError` unless ``path`` hashes to ``integrity`` (``<algo>-<base64>``)."""
    algorithm = integrity.split("-", 1)[0]
    if algorithm not in ("sha512", "sha384", "sha256", "sha1"):
        raise ValueError(f"Unsupported integrity algorithm in {integrity!r}.")
    got = integrity_of(path, algorithm)
    if got != integrity:
        raise IntegrityError(
            f"{path}: integrity mismatch.\n  expected {integrity}\n  got      {got}\n"
            "The file is corrupt or not the pinned release. Delete it and run the build again; if it fails "
            "again, the registry (or a proxy, $DSN_LAB_NPM_REGISTRY) serves different bytes."
        )


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


def _https_get(pkg: NpmPackage, dest_dir: Path, progress: bool) -> Path:
    from tqdm.auto import tqdm

    out = dest_dir / pkg.tarball_name
    url = pkg.tarball_url
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(out, "wb") as f:  # noqa: S310 (https)
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=pkg.tarball_name,
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise PackageFetchError(
            f"Could not download {url}: {exc}.\nEmojiSketch needs the npm registry once (then the tarballs "
            f"are cached in {npm_cache_dir()}). Fix: check the network or proxy, or set "
            "$DSN_LAB_NPM_REGISTRY to a mirror; or copy the tarballs (npm pack "
            f"{pkg.name}@{pkg.version}) into that folder."
        ) from exc
    return out


def fetch_package(
    pkg: NpmPackage, cache_dir: Path | None = None, *, use_npm: bool | None = None, progress: bool = True
) -> Path:
    """The verified tarball of ``pkg`` in the cache, fetching it first if needed.

    ``use_npm``: None tries ``npm pack`` when npm is on PATH and falls back to HTTPS; False forces HTTPS.
    A cached file that fails the integrity check is replaced; a fresh one that fails raises
    :class:`IntegrityError` and leaves nothing at the final path.
    """
    cache = Path(cache_dir) if cache_dir is not None else npm_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / pkg.tarball_name
    if final.is_file():
        try:
            check_integrity(final, pkg.integrity)
            return final
        except IntegrityError:
            final.unlink()
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        got = _npm_pack(pkg, Path(tmp)) if use_npm is not False else None
        if got is None:
            got = _https_get(pkg, Path(tmp), progress)
        check_integrity(got, pkg.integrity)
        os.replace(got, final)
    return final


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
        raise IntegrityError(
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
    try:
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
        from importlib.metadata import version as dist_version

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
