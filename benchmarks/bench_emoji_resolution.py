"""Where the demo's ceiling is: the head on frozen features, and trained checkpoints, at each input size.

Scored on the 90 held-out *training* concepts (the "val" split: their OpenMoji sketch queries against their
488 photos), never on the unseen ones. For each image size it prints

- frozen: the pooled ImageNet features of the demo's backbone, as they are;
- head on frozen features: the demo's "head trained on frozen features" row (``probe.fit_probe``: a
  projection and a cosine classifier fitted by CE on the frozen features of every training sketch and photo,
  the step kept by val mAP@all, as the demo keeps it), fitted on that size's features;
- each ``--checkpoint``: the trained model's codes, embedded at that size (trained at its own size: a larger
  test size is FixRes's train/test resolution discrepancy).

    python benchmarks/bench_emoji_resolution.py                                   # 112, 160, 224 px
    python benchmarks/bench_emoji_resolution.py --checkpoint runs/emoji-demo/best.pt
    python benchmarks/bench_emoji_resolution.py --sizes 112 128 --backbone efficientnet_lite2

Frozen features go to the demo's feature cache (keyed by backbone and transform), so a second call only
refits the heads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsn_lab.checkpoint import load_trained_model  # noqa: E402
from dsn_lab.config import get_preset  # noqa: E402
from dsn_lab.data import get_dataset  # noqa: E402
from dsn_lab.data.emojisketch import ensure_emojisketch  # noqa: E402
from dsn_lab.embed import extract_features, frozen_feature_cache  # noqa: E402
from dsn_lab.metrics import evaluate_retrieval  # noqa: E402
from dsn_lab.model import build_model  # noqa: E402
from dsn_lab.probe import fit_probe  # noqa: E402

Split = tuple[np.ndarray, np.ndarray]


def val_map(query: Split, gallery: Split) -> float:
    return float(evaluate_retrieval(*query, *gallery)["mAP@all"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 160, 224])
    p.add_argument("--backbone", default=None, help="default: the emoji-demo preset's")
    p.add_argument("--checkpoint", action="append", default=[], help="a trained run's .pt (repeatable)")
    p.add_argument("--data-root", default=None, help="an EmojiSketch v1 folder (default: the cache)")
    args = p.parse_args(argv)

    cfg = get_preset("emoji-demo", **({"backbone": args.backbone} if args.backbone else {}))
    dataset = "emojisketch"  # v1: the demo's data (v2's val queries are the same OpenMoji sketches)
    root = Path(args.data_root) if args.data_root else ensure_emojisketch(None, version=1)
    parts = [(s, d) for s in ("train", "val") for d in ("sketch", "photo")]
    ds = {k: get_dataset(dataset, root, split=k[0], domain=k[1], verbose=False) for k in parts}
    n_classes = len(ds[("train", "sketch")].classes)
    frozen = build_model(cfg, n_classes).eval()
    cache = frozen_feature_cache(dataset, cfg.backbone, frozen)
    trained = [(c, *load_trained_model(c, "cpu")[:2]) for c in args.checkpoint]

    header = f"{'size':>5} {'frozen':>8} {'head on frozen':>15} (step)" + "".join(
        f" {Path(c).parent.name + ' @' + str(tc.image_size):>24}" for c, _, tc in trained
    )
    print(
        f"{cfg.backbone}, {dataset} val: {len(ds[('val', 'sketch')])} sketch queries x "
        f"{len(ds[('val', 'photo')])} photos, mAP@all (torch threads {torch.get_num_threads()})"
    )
    print(header)
    for size in args.sizes:
        t = time.perf_counter()
        feats = {
            k: extract_features(frozen, ds[k], domain=k[1], output="features", image_size=size, **cache)
            for k in parts
        }
        _, _, info = fit_probe(
            (*feats[("train", "sketch")], *feats[("train", "photo")]),
            n_classes,
            max(cfg.hashing_dim, 64),
            steps=400,
            seed=cfg.seed,
            val=(*feats[("val", "sketch")], *feats[("val", "photo")]),
        )
        line = (
            f"{size:>5} {val_map(feats[('val', 'sketch')], feats[('val', 'photo')]):>8.3f} "
            f"{info['val_mAP@all']:>15.3f} ({info['step']:>3})"
        )
        for _, model, _ in trained:
            q = extract_features(model, ds[("val", "sketch")], domain=0, image_size=size)
            g = extract_features(model, ds[("val", "photo")], domain=1, image_size=size)
            line += f" {val_map(q, g):>24.3f}"
        print(f"{line}   [{time.perf_counter() - t:.0f}s]", flush=True)


if __name__ == "__main__":
    main()
