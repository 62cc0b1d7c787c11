"""Training speed: seconds per batch and images per second of dsn_lab.train for a few presets.

    python benchmarks/bench_train.py --quick            # cpu-quick on synthetic data (seconds)
    python benchmarks/bench_train.py --preset emoji-demo --steps 20
    python benchmarks/bench_train.py --preset sketchy-s1-paper --steps 50 --set channels_last=true

Prints one table row per preset: batches timed, median and mean s/batch (after the first, warm-up, batch),
images per second (S sketches + P photos per batch, each with its ``augment_views`` augmented views), peak
GPU memory when on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsn_lab.cli import parse_set  # noqa: E402
from dsn_lab.config import get_preset  # noqa: E402


def bench(preset: str, steps: int, overrides: dict, data_root: str | None, device: str | None) -> dict:
    from dsn_lab.train import train

    times: list[float] = []
    last = [time.perf_counter()]

    with tempfile.TemporaryDirectory() as tmp:
        if data_root is None and preset == "cpu-quick":
            from dsn_lab.data.fixtures import make_synthetic_emojisketch

            data_root = str(make_synthetic_emojisketch(Path(tmp) / "synth", per_class=4, size=64))
        cfg = get_preset(
            preset,
            output_dir=str(Path(tmp) / "run"),
            epochs=1,
            steps_per_epoch=steps,
            log_every=1,
            max_train_seconds=None,
            **overrides,
        )

        import dsn_lab.train as T

        real = T._Trainer._step_losses

        def timed(self, batch):
            out = real(self, batch)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
            return out

        T._Trainer._step_losses = timed
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            train(cfg, data_root=data_root, device=device, verbose=False)
        finally:
            T._Trainer._step_losses = real
    warm = times[1:] or times
    # the un-augmented images and their augmented views (the views only when SupCon is on)
    views = 1 + (cfg.augment_views if cfg.use_contrastive else 0)
    images = views * (cfg.sketches_per_batch + cfg.photos_per_batch)
    return {
        "preset": preset,
        "batches": len(warm),
        "median_s": statistics.median(warm),
        "mean_s": statistics.fmean(warm),
        "img_per_s": images / statistics.median(warm),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help="preset(s) to time (default: cpu-quick)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data-root")
    ap.add_argument("--device")
    ap.add_argument("--quick", action="store_true", help="cpu-quick preset, 4 batches")
    args = ap.parse_args()
    presets = args.preset or ["cpu-quick"]
    steps = 4 if args.quick else args.steps
    overrides = parse_set(args.overrides)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"device {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}"
    )
    print(f"{'preset':<22}{'batches':>8}{'median s':>10}{'mean s':>9}{'img/s':>9}{'GPU GiB':>9}")
    for preset in presets:
        r = bench(preset, steps, overrides, args.data_root, args.device)
        print(
            f"{r['preset']:<22}{r['batches']:>8}{r['median_s']:>10.3f}{r['mean_s']:>9.3f}"
            f"{r['img_per_s']:>9.1f}{r['peak_gpu_gib']:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
