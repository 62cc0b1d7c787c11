"""One-command GPU check of the paper-size DSN step: throughput, memory, evaluation time, run-time estimate.

    python benchmarks/gpu_check.py            # on one H100/H200: about 3-6 minutes, prints a markdown table
    python benchmarks/gpu_check.py --toy      # any machine (CPU too): toy sizes, checks that it all runs

What it measures, on synthetic Sketchy-shaped batches (random tensors already on the device, so image
decoding and the DataLoader are *not* included) with random weights (speed does not depend on the values):

1. Training throughput (images/s through the student, 3 views of S + P) and peak memory of the
   ``sketchy-s1-paper`` step (``dsn_lab.step.dsn_step``: CSE-ResNet50, teacher, memory bank, Adam) at
   224 px, S = 32 sketches + P = 64 photos: bf16 autocast with and without ``channels_last``, and the
   fp16 + GradScaler path forced (what a GPU without bf16, e.g. a T4, runs).
2. Evaluation time at Sketchy S1 size (15,229 sketches + 17,101 photos): fp32 embedding (the default) plus
   ``evaluate_retrieval`` of the real-valued and ITQ binary codes on the GPU.
3. The estimated hours of one ``sketchy-s1-released`` run: 20 epochs x 1,068 steps (min(55,252 // 32,
   68,401 // 64), the S1 training lists) at the measured fp32-teacher bf16 step time, plus 300 paired
   validation batches of 96 images per epoch and the final S1 evaluation. Data loading is assumed to keep up.
4. The largest per-step batch (S : P = 1 : 2) that trains in 16 GB (a Colab T4), found by capping this
   process's CUDA memory at 16 GiB and trying sizes, with fp16 + GradScaler, and the ``grad_accum_steps``
   that restores the paper's 96 images per optimiser step (BatchNorm, SupCon and the memory bank still see
   the smaller per-step batch).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsn_lab.config import get_preset  # noqa: E402
from dsn_lab.memory import SketchMemory  # noqa: E402
from dsn_lab.model import ImageNetTeacher, build_backbone, build_model  # noqa: E402
from dsn_lab.step import dsn_step  # noqa: E402

S1_QUERIES, S1_GALLERY = 15_229, 17_101  # Sketchy-Ext split 1 zero-shot sketches / photos
S1_TRAIN_SKETCHES, S1_TRAIN_PHOTOS = 55_252, 68_401  # its seen-class training lists
GIB = 1024**3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """Model, teacher, bank, optimiser and one synthetic batch for a given size."""

    def __init__(
        self,
        args: argparse.Namespace,
        sketches: int,
        photos: int,
        channels_last: bool,
        released: bool = False,
    ) -> None:
        dev = torch.device(args.device)
        cfg = get_preset("sketchy-s1-released" if released else "sketchy-s1-paper")
        self.cfg = cfg.replace(
            backbone=args.backbone, pretrained=False, image_size=args.size, channels_last=channels_last
        )
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(self.cfg, args.classes).to(dev, memory_format=fmt).train()
        trunk, _, _ = build_backbone(args.backbone, pretrained=False)
        fc = torch.randn(1000, self.model.feature_dim) * 0.01
        self.teacher = ImageNetTeacher(trunk, fc, torch.zeros(1000)).to(dev, memory_format=fmt).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        mem = self.cfg.quirk("memory_row_overwrite")
        self.memory = SketchMemory(args.classes, 10, self.model.feature_dim, faithful=mem).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4, weight_decay=5e-4)
        self.cid = torch.rand(args.classes, 1000, device=dev)

        def img(k: int) -> torch.Tensor:
            return torch.randn(k, 3, args.size, args.size, device=dev)

        def lab(k: int) -> torch.Tensor:
            return torch.randint(0, args.classes, (k,), device=dev)

        self.batch = {
            "sketch": img(sketches),
            "photo": img(photos),
            "sketch_views": [img(sketches), img(sketches)],
            "photo_views": [img(photos), img(photos)],
            "sketch_label": lab(sketches),
            "photo_label": lab(photos),
        }
        self.images = 3 * (sketches + photos)

    def step(self, dtype: torch.dtype | None, scaler: torch.amp.GradScaler) -> None:
        res = dsn_step(
            self.model,
            self.batch,
            self.cfg,
            teacher=self.teacher,
            memory=self.memory,
            cid_mask=self.cid,
            autocast_dtype=dtype,
        )
        self.opt.zero_grad(set_to_none=True)
        scaler.scale(res.total).backward()
        scaler.step(self.opt)
        scaler.update()


def _precision(name: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    if device.type != "cuda" or name == "fp32":
        return None, False
    return (torch.bfloat16, False) if name == "bf16" else (torch.float16, True)


def train_row(args: argparse.Namespace, precision: str, channels_last: bool, released: bool = False) -> dict:
    """Median step time, images/s and peak memory of the training step (paper preset, or the released one:
    fp32 teacher, the released memory bank's per-sketch loop)."""
    dev = torch.device(args.device)
    setup = Setup(args, args.sketches, args.photos, channels_last, released)
    dtype, use_scaler = _precision(precision, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    for _ in range(args.warmup):
        setup.step(dtype, scaler)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(args.steps):
        _sync(dev)
        t0 = time.perf_counter()
        setup.step(dtype, scaler)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else float("nan")
    del setup
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    shown = precision if dev.type == "cuda" else "fp32 (CPU: no autocast)"
    label = f"{shown}{' + GradScaler' if use_scaler else ''}{', channels_last' if channels_last else ''}"
    label = f"{'sketchy-s1-released' if released else 'sketchy-s1-paper'}: {label}"
    return {
        "what": label,
        "s/step": sec,
        "images/s": 3 * (args.sketches + args.photos) / sec,
        "peak GiB": peak,
    }


@torch.no_grad()
def eval_seconds(args: argparse.Namespace, queries: int, gallery: int) -> dict[str, float]:
    """fp32 embedding of ``queries + gallery`` images, then retrieval metrics (real, ITQ) on the device."""
    from dsn_lab.metrics import evaluate_retrieval

    dev = torch.device(args.device)
    setup = Setup(args, 2, 2, channels_last=False)
    model = setup.model.eval()
    bs = args.eval_batch
    x = torch.randn(bs, 3, args.size, args.size, device=dev)
    feats = []
    _sync(dev)
    t0 = time.perf_counter()
    for domain, count in ((0, queries), (1, gallery)):
        for i in range(0, count, bs):
            k = min(bs, count - i)
            feats.append(model(x[:k], torch.full((k, 1), float(domain), device=dev))[2].float())
    _sync(dev)
    t_embed = time.perf_counter() - t0
    codes = torch.cat(feats)
    labels = torch.randint(0, 25, (queries + gallery,), device=dev)
    labels[:25] = torch.arange(25, device=dev)
    labels[queries : queries + 25] = torch.arange(25, device=dev)
    t0 = time.perf_counter()
    q, g = codes[:queries], codes[queries:]
    evaluate_retrieval(q, labels[:queries], g, labels[queries:], device=dev)
    evaluate_retrieval(q, labels[:queries], g, labels[queries:], codes="itq", device=dev)
    _sync(dev)
    return {"embed": t_embed, "metrics": time.perf_counter() - t0}


def largest_batch(args: argparse.Namespace, budget_gib: float) -> int | None:
    """Largest S (P = 2 S) whose fp16 + GradScaler step fits ``budget_gib`` of CUDA memory (None: CPU)."""
    dev = torch.device(args.device)
    if dev.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(dev).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * GIB / total), dev)
    best = 0
    try:
        for s in args.search:
            try:
                setup = Setup(args, s, 2 * s, channels_last=True)
                scaler = torch.amp.GradScaler("cuda")
                for _ in range(2):
                    setup.step(torch.float16, scaler)
                _sync(dev)
                best = s
            except torch.cuda.OutOfMemoryError:
                break
            finally:
                setup = None
                torch.cuda.empty_cache()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
    return best


def estimate_hours(step_s: float, val_s_per_image: float, eval_s: float, epochs: int = 20) -> float:
    steps = min(S1_TRAIN_SKETCHES // 32, S1_TRAIN_PHOTOS // 64)
    val = 300 * 96 * val_s_per_image
    return (epochs * (steps * step_s + val) + eval_s) / 3600


def run(args: argparse.Namespace) -> str:
    rows = [
        train_row(args, "bf16", False),
        train_row(args, "bf16", True),
        train_row(args, "fp16", True),
        train_row(args, "bf16", False, released=True),  # the released preset (fp32 teacher, faithful bank)
    ]
    ev = eval_seconds(args, args.queries, args.gallery)
    per_image = ev["embed"] / (args.queries + args.gallery)
    hours = estimate_hours(rows[-1]["s/step"], per_image, ev["embed"] + ev["metrics"])
    fits = largest_batch(args, 16.0)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    out = [
        f"## GPU check: {name}, {args.backbone} at {args.size} px, batch {args.sketches}+{args.photos} "
        f"(x3 views), {args.steps} timed steps (median)",
        "",
        "| training step | s/step | images/s | peak memory (GiB) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        out.append(f"| {r['what']} | {r['s/step']:.3f} | {r['images/s']:.0f} | {r['peak GiB']:.1f} |")
    out += [
        "",
        "| other | value |",
        "|---|---:|",
        f"| evaluation, {args.queries:,} + {args.gallery:,} images: fp32 embedding (s) | {ev['embed']:.1f} |",
        f"| evaluation: real + ITQ metrics (s) | {ev['metrics']:.1f} |",
        f"| estimated hours, one sketchy-s1-released run (20 x 1,068 steps + validation) | {hours:.2f} |",
    ]
    if fits is not None:
        accum = math.ceil(96 / (3 * fits)) if fits else float("nan")
        out += [
            f"| largest per-step batch in 16 GiB (fp16 + GradScaler, channels_last) | {fits}+{2 * fits} |",
            f"| grad_accum_steps for the paper's 32+64 per optimiser step | {accum} |",
        ]
    else:
        out.append("| largest batch in 16 GiB | - (needs CUDA) |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="tiny sizes (resnet18, 32 px): checks that it runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    args.backbone, args.size, args.sketches, args.photos, args.classes = "cse_resnet50", 224, 32, 64, 100
    args.steps, args.warmup, args.eval_batch = 10, 3, 256
    args.queries, args.gallery = S1_QUERIES, S1_GALLERY
    args.search = [8, 12, 16, 20, 24, 28, 32, 40]
    if args.toy:
        args.backbone, args.size, args.sketches, args.photos, args.classes = "resnet18", 32, 2, 4, 5
        args.steps, args.warmup, args.eval_batch = 1, 1, 16
        args.queries, args.gallery = 40, 48
        args.search = [1, 2]
    return args


def main(argv: list[str] | None = None) -> int:
    print(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
