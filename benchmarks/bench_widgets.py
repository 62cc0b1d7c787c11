"""Per-query response of the retrieval explorer on the CPU: rank + AP + grid drawing, after encoding.

Target (issue 9): <= 300 ms for a 17,000-image gallery (Sketchy-Ext split 1 has 17,101 unseen-class photos).
Synthetic features and small synthetic thumbnails stand in for a trained model and the photos: the time of
ranking and drawing depends on the gallery size, the code length, k and the thumbnails, not on the pixels.

    python benchmarks/bench_widgets.py            # 17,101 photos, 64-d and 512-d codes
    python benchmarks/bench_widgets.py --quick    # small sizes, checks the script runs

Prints a markdown table; the widget is driven as the front end would (setting the dropdown's value), with no
browser attached, so the time is the kernel's share of the response.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from dsn_lab.widgets import Explorer, FeatureSet, RetrievalExplorer, Thumbnails, model_encoder


def synthetic_pool(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct photo-like images (a coloured shape on a tinted background)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        d = ImageDraw.Draw(img)
        x, y, r = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 3))
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        d.ellipse([x - r // 2, y - r // 2, x + r // 2, y + r // 2], fill=colour)
        pool.append(img)
    return pool


def make_explorer(
    n_gallery: int, n_queries: int, dim: int, n_classes: int, n_models: int, thumbs: Thumbnails, seed: int = 0
) -> Explorer:
    rng = np.random.default_rng(seed)
    g_labels = rng.integers(0, n_classes, n_gallery)
    q_labels = rng.integers(0, n_classes, n_queries)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    sets = []
    for m in range(n_models):
        g = centres[g_labels] + rng.normal(scale=1.0 + m, size=(n_gallery, dim)).astype(np.float32)
        q = centres[q_labels] + rng.normal(scale=1.0 + m, size=(n_queries, dim)).astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        sets.append(FeatureSet(["DSN", "baseline"][m], g, q))
    qthumbs = Thumbnails.from_images(synthetic_pool(16, 96, seed + 1), size=96)
    qthumbs.loader = (lambda pool: lambda i: pool[i % len(pool)])(synthetic_pool(16, 96, seed + 1))
    qthumbs.n = n_queries
    return Explorer(
        sets,
        g_labels,
        [f"class{c}" for c in range(n_classes)],
        query_labels=q_labels,
        gallery_thumbs=thumbs,
        query_thumbs=qthumbs,
    )


def time_queries(w: RetrievalExplorer, queries: list[int]) -> list[float]:
    """Wall time of choosing each query in the dropdown (the observer ranks and redraws)."""
    out = []
    for qi in queries:
        if w.query.value == qi:
            continue
        t0 = time.perf_counter()
        w.query.value = qi
        out.append((time.perf_counter() - t0) * 1000.0)
        assert w.last_results and w.last_results[0].indices.size > 0
    return out


def row(name: str, times: list[float], budget: float) -> str:
    med = statistics.median(times)
    p95 = float(np.percentile(times, 95))
    ok = "yes" if p95 <= budget else "**no**"
    return f"| {name} | {len(times)} | {med:.1f} | {p95:.1f} | {max(times):.1f} | {ok} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=17101)
    ap.add_argument("--queries", type=int, default=60, help="timed queries per scenario")
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--classes", type=int, default=25)
    ap.add_argument("--thumb-pool", type=int, default=512, help="distinct source images of the thumbnails")
    ap.add_argument("--photo-size", type=int, default=256, help="side of the source images (cold thumbnails)")
    ap.add_argument("--budget-ms", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--quick", action="store_true", help="small sizes: check that the script runs")
    args = ap.parse_args()
    if args.quick:
        args.gallery, args.queries, args.dims, args.thumb_pool = 2000, 8, [64], 64
    if args.threads:
        torch.set_num_threads(args.threads)

    pool = synthetic_pool(args.thumb_pool, args.photo_size)
    print(
        f"# explorer per-query response ({platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}, gallery {args.gallery:,}, "
        f"budget {args.budget_ms:.0f} ms)\n"
    )

    warm = Thumbnails(lambda i: pool[i % len(pool)], args.gallery, size=96)
    t0 = time.perf_counter()
    warm.precompute(progress=False)
    precompute_s = time.perf_counter() - t0

    lines = [
        "| scenario | queries | median ms | p95 ms | max ms | p95 <= budget |",
        "|---|---|---|---|---|---|",
    ]
    setup = []
    for dim in args.dims:
        for n_models in (1, 2):
            ex = make_explorer(args.gallery, max(1000, args.queries * 8), dim, args.classes, n_models, warm)
            w = RetrievalExplorer(ex, k=10)
            rng = np.random.default_rng(dim + n_models)
            options = [v for _, v in w.query.options]

            def pick(rng=rng, options=options) -> list[int]:
                return [int(v) for v in rng.choice(options, args.queries, replace=False)]

            tag = f"{dim}-d, {'2 checkpoints side by side' if n_models == 2 else '1 checkpoint'}"
            for k in (10, 50):
                w.k.value = k
                lines.append(row(f"{tag}, real-valued, k={k}", time_queries(w, pick()), args.budget_ms))
            t0 = time.perf_counter()
            w.codes.value = "binary (ITQ)"  # first use fits ITQ on the gallery (once per checkpoint)
            setup.append(
                f"ITQ fit + gallery codes, {dim}-d, {n_models} checkpoint(s): "
                f"{(time.perf_counter() - t0) * 1000:.0f} ms (once)"
            )
            lines.append(row(f"{tag}, binary ITQ, k=50", time_queries(w, pick()), args.budget_ms))
            if n_models == 1:
                # rank and draw separately (real-valued, k=50)
                w.codes.value = "real-valued"
                qs = pick()
                rank = [ex.search("DSN", query_index=q, k=50).rank_ms for q in qs]
                res = [ex.search("DSN", query_index=q, k=50) for q in qs]
                draw = []
                for r in res:
                    t0 = time.perf_counter()
                    ex.grid_html([r], ex.query_thumbs.uri(0))
                    draw.append((time.perf_counter() - t0) * 1000.0)
                lines.append(row(f"{tag}: ranking + AP only, k=50", rank, args.budget_ms))
                lines.append(row(f"{tag}: grid HTML only, k=50", draw, args.budget_ms))
    # thumbnails not precomputed: each tile is decoded and shrunk on first sight
    cold = Thumbnails(lambda i: pool[i % len(pool)], args.gallery, size=96)
    ex = make_explorer(args.gallery, max(1000, args.queries * 8), args.dims[0], args.classes, 1, cold)
    w = RetrievalExplorer(ex, k=50)
    rng = np.random.default_rng(7)
    qs = [int(v) for v in rng.choice([v for _, v in w.query.options], args.queries, replace=False)]
    lines.append(
        row(
            f"{args.dims[0]}-d, cold thumbnails ({args.photo_size} px sources), k=50",
            time_queries(w, qs),
            args.budget_ms,
        )
    )
    print("\n".join(lines))
    print(
        f"\nthumbnail precompute: {args.gallery:,} images in {precompute_s:.1f} s "
        f"({precompute_s / args.gallery * 1000:.2f} ms each, once; cached on disk with cache_dir)"
    )
    for s in setup:
        print(s)

    # query encoding (excluded from the budget): a drawn or uploaded image through a small model
    try:
        from dsn_lab.config import get_preset
        from dsn_lab.model import build_model
    except ImportError as exc:
        print(f"\nencoding not timed: {exc}")
        return
    for preset in ("cpu-quick",) if args.quick else ("cpu-quick", "emoji-demo"):
        cfg = get_preset(preset, pretrained=False)
        model = build_model(cfg, num_classes=10)
        enc = model_encoder(model, image_size=cfg.image_size)
        img = pool[0]
        enc(img)
        times = []
        for _ in range(3 if args.quick else 10):
            t0 = time.perf_counter()
            enc(img)
            times.append((time.perf_counter() - t0) * 1000.0)
        print(
            f"encode one query ({preset}: {cfg.backbone} at {cfg.image_size} px): "
            f"median {statistics.median(times):.0f} ms (not part of the per-query budget)"
        )


if __name__ == "__main__":
    main()
