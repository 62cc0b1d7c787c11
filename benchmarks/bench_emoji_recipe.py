"""Why the emoji-* presets differ from the released settings: held-out val mAP of each step of the recipe.

Each variant trains DSN on EmojiSketch (CPU) from the ``emoji-course`` preset for the same wall time and is
scored every 20 steps on the 90 held-out *training* concepts ("val" split) -- never on the unseen concepts,
which the preset must not be tuned on. The rows add one change at a time:

1. released settings: SupCon weight 0.1, BatchNorm trained, linear classifier on the code;
2. + SupCon weight 1.0;
3. + BatchNorm statistics frozen at ImageNet's (``freeze_bn``);
4. + cosine classifier on the code (``classifier_scale=16``): the emoji-course preset.

All rows keep class-aligned batches, channels_last and a cosine lr schedule stretched over 100 short
"epochs", so the lr is nearly constant within the budget: the rows compare the recipe, not the schedule.

``--ladder data`` asks the same of the demo's data and backbone (issue: EmojiSketch v2), at equal wall time:
EmojiSketch v1 vs v2 training data (the val split is the same 90 OpenMoji queries in both), and
EfficientNet-Lite0 vs Lite2 (about 1.8x slower per step, so it takes fewer steps in the same time).

    python benchmarks/bench_emoji_recipe.py                  # 240 s per variant: about 17 minutes
    python benchmarks/bench_emoji_recipe.py --seconds 30     # a quick look
    python benchmarks/bench_emoji_recipe.py --ladder data    # v1 / v2 data, Lite0 / Lite2
    python benchmarks/bench_emoji_recipe.py --ladder head    # SVD head vs linear probe first (LP-FT)

Every ladder starts from the SVD head (``head_init="imagenet"``) unless its row says otherwise; the demo
and emoji-course use the probe (measured at emoji-course's 160 steps: README, "The demo").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsn_lab.config import get_preset  # noqa: E402

RECIPE: list[tuple[str, dict]] = [
    ("released settings", {"w_contrastive": 0.1, "freeze_bn": False, "classifier_scale": None}),
    ("+ SupCon weight 1.0", {"w_contrastive": 1.0, "freeze_bn": False, "classifier_scale": None}),
    ("+ frozen BatchNorm", {"w_contrastive": 1.0, "freeze_bn": True, "classifier_scale": None}),
    (
        "+ cosine classifier (emoji-course)",
        {"w_contrastive": 1.0, "freeze_bn": True, "classifier_scale": 16.0},
    ),
]
DATA: list[tuple[str, dict]] = [
    ("EmojiSketch v1, Lite0", {"dataset": "emojisketch", "backbone": "efficientnet_lite0"}),
    ("EmojiSketch v2, Lite0", {"dataset": "emojisketch-v2", "backbone": "efficientnet_lite0"}),
    ("EmojiSketch v2, Lite2", {"dataset": "emojisketch-v2", "backbone": "efficientnet_lite2"}),
]
HEAD: list[tuple[str, dict]] = [
    ("SVD head (released init)", {"head_init": "imagenet"}),
    ("probe head, then fine-tuning (emoji-course)", {"head_init": "probe"}),
]
LADDERS = {"recipe": RECIPE, "data": DATA, "head": HEAD}


def run(name: str, changes: dict, seconds: float, data_root: str | None) -> dict:
    from dsn_lab.data import EMOJISKETCH_VERSIONS
    from dsn_lab.data.emojisketch import ensure_emojisketch
    from dsn_lab.train import train

    if data_root is None:
        version = EMOJISKETCH_VERSIONS[changes.get("dataset", get_preset("emoji-course").dataset)]
        data_root = str(ensure_emojisketch(None, version=version))
    with tempfile.TemporaryDirectory() as tmp:
        settings = dict(
            output_dir=str(Path(tmp) / "run"),
            max_train_seconds=seconds,
            lr_follows_time=True,  # this benchmark compares variants at equal wall time: anneal over it
            steps_per_epoch=20,
            epochs=100,
            # the ladders were measured from the SVD head; --ladder head compares it with the probe
            head_init="imagenet",
        )
        cfg = get_preset("emoji-course", **{**settings, **changes})
        t = time.perf_counter()
        res = train(cfg, data_root=data_root, device="cpu", verbose=False)
        wall = time.perf_counter() - t
    epochs = [r for r in res.history if r.get("kind") == "epoch"]
    return {
        "name": name,
        "val": [r["val_mAP@all"] for r in epochs],
        "best": max(r["val_mAP@all"] for r in epochs),
        "steps": epochs[-1]["step"],
        "wall": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=240.0, help="training wall time per variant")
    ap.add_argument("--data-root", help="EmojiSketch folder (default: built under ~/.cache/dsn_lab)")
    ap.add_argument("--ladder", choices=sorted(LADDERS), default="recipe", help="which variants (see above)")
    args = ap.parse_args()
    data_root = args.data_root
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seconds:.0f} s per variant")
    print("| variant | optimiser steps | val mAP@all every 20 steps | best |")
    print("|---|---|---|---|")
    for name, changes in LADDERS[args.ladder]:
        r = run(name, changes, args.seconds, data_root)
        trace = " ".join(f"{v:.3f}" for v in r["val"])
        print(f"| {r['name']} | {r['steps']} | {trace} | **{r['best']:.3f}** |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
