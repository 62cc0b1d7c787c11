"""Which SVG renderer EmojiSketch uses: speed and pixel fidelity of each candidate against cairosvg.

Up to 2026-12 EmojiSketch was rasterised with cairosvg, which needs the system cairo library (no root on
Colab-like machines, no wheel carries it). This script renders every SVG of a full EmojiSketch build
(OpenMoji black line art and the Iconify colour sets; Fluent 3D is WebP and is not rendered) the way the
build does -- at twice the width, then Lanczos down to ``--size`` px on white -- with each renderer that is
installed, and compares each with cairosvg pixel by pixel at the final size:

- ``dsn_lab``: :func:`dsn_lab.data.emoji_sources.rasterise_svg`, what the build uses today (resvg-py);
- ``pymupdf``, ``skia``: PyMuPDF and skia-python, when installed (other self-contained wheels);
- ``cairosvg``: the reference (optional: without it only the speed columns are filled).

Columns: ms per image (render + on_white), mean |diff| over all pixels and channels (in /255), the largest
|diff|, the fraction of pixels whose largest channel differs by more than 16/255, and the five images that
differ most. ``--sheet PATH`` writes a PNG contact sheet of the worst images: cairosvg | renderer | |diff|
(x4).

    python benchmarks/bench_render.py                          # every SVG of the full build (~3,800)
    python benchmarks/bench_render.py --limit 300 --sheet /tmp/worst.png
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsn_lab.data import emoji_sources as es  # noqa: E402
from dsn_lab.data import emojisketch as ek  # noqa: E402

Renderer = Callable[[bytes, int], Image.Image]


def build_svgs(limit: int | None = None) -> list[tuple[str, bytes]]:
    """``(name, svg)`` for every SVG the full build renders, in build order (reads the cached tarballs)."""
    src = ek.load_sources({p.key: es.fetch_package(p, progress=False) for p in es.ALL_PACKAGES})
    plan = ek.plan_split(src.concepts, dropped=src.dropped)
    out: list[tuple[str, bytes]] = []
    for split in ek.SPLITS:
        for cls, c in plan.classes[split]:
            out.append((f"openmoji/{cls}", src.openmoji_svgs[c.hexcode]))
            for key, ref in sorted(c.photos.items()):
                if key in src.iconify:
                    out.append((f"{key}/{cls}", es.icon_svg(es.resolve_icon(src.iconify[key], ref)).encode()))
    return out[:limit] if limit else out


def _cairosvg(svg: bytes, size: int) -> Image.Image:
    import cairosvg

    png = cairosvg.svg2png(bytestring=svg, output_width=2 * size)
    return es.on_white(Image.open(io.BytesIO(png)), size)


def _pymupdf(svg: bytes, size: int) -> Image.Image:
    import pymupdf

    with pymupdf.open(stream=svg, filetype="svg") as doc:
        page = doc[0]
        zoom = 2 * size / page.rect.width
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=True)
        # MuPDF keeps alpha premultiplied: PIL's "RGBa" mode undoes it on convert
        img = Image.frombytes("RGBa", (pix.width, pix.height), pix.samples).convert("RGBA")
    return es.on_white(img, size)


def _skia(svg: bytes, size: int) -> Image.Image:
    import skia

    dom = skia.SVGDOM.MakeFromStream(skia.MemoryStream(svg))
    cw, ch = dom.containerSize().width(), dom.containerSize().height()
    if not (cw and ch):  # no width/height attributes (OpenMoji): the viewBox sets the size
        vb = re.search(rb'viewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)[\s,]+([\d.]+)', svg)
        if vb is None:
            raise ValueError("SVG without width, height or viewBox")
        cw, ch = float(vb[1]), float(vb[2])
        dom.setContainerSize(skia.Size(cw, ch))
    w = 2 * size
    h = max(1, round(ch * w / cw))
    surface = skia.Surface(w, h)
    with surface as canvas:
        canvas.clear(skia.ColorTRANSPARENT)
        canvas.scale(w / cw, h / ch)
        dom.render(canvas)
    arr = surface.makeImageSnapshot().toarray(
        colorType=skia.ColorType.kRGBA_8888_ColorType, alphaType=skia.AlphaType.kUnpremul_AlphaType
    )
    return es.on_white(Image.fromarray(arr, "RGBA"), size)


CANDIDATES: dict[str, tuple[str, Renderer]] = {
    "dsn_lab": ("resvg_py", lambda svg, size: es.rasterise_svg(svg, size)),
    "pymupdf": ("pymupdf", _pymupdf),
    "skia": ("skia", _skia),
    "cairosvg": ("cairosvg", _cairosvg),
}


def available() -> dict[str, Renderer]:
    """The candidates whose module imports here (cairosvg also needs the cairo C library)."""
    out = {}
    for name, (module, fn) in CANDIDATES.items():
        try:
            __import__(module)
        except (ImportError, OSError):
            print(f"({name}: {module} not importable, skipped)", file=sys.stderr)
            continue
        out[name] = fn
    return out


def render_all(
    fn: Renderer, svgs: list[tuple[str, bytes]], size: int
) -> tuple[list[np.ndarray | None], float]:
    """Every image as a uint8 array (None where the renderer raised) and the mean ms per image."""
    imgs: list[np.ndarray | None] = []
    t0 = time.perf_counter()
    for name, svg in svgs:
        try:
            imgs.append(np.asarray(fn(svg, size)))
        except Exception as exc:  # noqa: BLE001 - a failure is a result to report, not a crash
            print(f"  {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            imgs.append(None)
    return imgs, 1000 * (time.perf_counter() - t0) / max(1, len(svgs))


def compare(ref: list[np.ndarray | None], got: list[np.ndarray | None]) -> dict[str, float | list[int]]:
    """Mean/max |diff| (in /255), fraction of pixels off by > 16, and the indices of the 5 worst images."""
    per_image, total, n_px, n_off, worst = [], 0.0, 0, 0, 0
    for a, b in zip(ref, got):
        if a is None or b is None:
            per_image.append(-1.0)
            continue
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        per_image.append(float(d.mean()))
        total += float(d.sum())
        n_px += d.shape[0] * d.shape[1]
        n_off += int((d.max(axis=2) > 16).sum())
        worst = max(worst, int(d.max()))
    order = np.argsort(per_image)[::-1]
    return {
        "mean": total / max(1, n_px * 3),
        "max": float(worst),
        "off16": n_off / max(1, n_px),
        "worst": [int(i) for i in order[:5] if per_image[i] >= 0],
        "per_image": per_image,
    }


def contact_sheet(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path, scale: int = 2) -> None:
    """One row per image: reference | candidate | |diff| x4, each scaled up ``scale`` times, captioned."""
    size = rows[0][1].shape[0] * scale
    sheet = Image.new("RGB", (3 * size + 40, len(rows) * (size + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (caption, a, b) in enumerate(rows):
        diff = np.clip(255 - 4 * np.abs(a.astype(np.int16) - b.astype(np.int16)), 0, 255).astype(np.uint8)
        y = r * (size + 14)
        draw.text((2, y), caption, fill="black")
        for c, im in enumerate((a, b, diff)):
            tile = Image.fromarray(im).resize((size, size), Image.Resampling.NEAREST)
            sheet.paste(tile, (c * (size + 20), y + 12))
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=ek.IMAGE_SIZE)
    ap.add_argument("--limit", type=int, default=None, help="only the first N SVGs of the build")
    ap.add_argument("--sheet", type=Path, default=None, help="contact sheet of the worst images (PNG)")
    args = ap.parse_args(argv)

    svgs = build_svgs(args.limit)
    print(f"{len(svgs)} SVGs, {args.size} px, renderer of dsn_lab: {es.svg_renderer()}")
    renderers = available()
    results = {name: render_all(fn, svgs, args.size) for name, fn in renderers.items()}
    ref = results.get("cairosvg", (None, 0.0))[0]
    head = f"{'renderer':<10} {'ms/img':>7} {'failed':>6} {'mean|d|':>8} {'max|d|':>7} {'>16/255':>8}"
    print(f"{head}  worst 5 (mean |d| of the image)")
    sheet_rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name, (imgs, ms) in results.items():
        failed = sum(i is None for i in imgs)
        if ref is None or name == "cairosvg":
            print(f"{name:<10} {ms:>7.2f} {failed:>6}")
            continue
        c = compare(ref, imgs)
        worst = ", ".join(f"{svgs[i][0]} ({c['per_image'][i]:.1f})" for i in c["worst"])
        row = f"{name:<10} {ms:>7.2f} {failed:>6} {c['mean']:>8.3f} {c['max']:>7.0f} {c['off16']:>8.4f}"
        print(f"{row}  {worst}")
        sheet_rows += [(f"{name}: {svgs[i][0]}", ref[i], imgs[i]) for i in c["worst"]]
    if args.sheet is not None and sheet_rows:
        contact_sheet(sheet_rows, args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
