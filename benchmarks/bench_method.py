"""Speed of the DSN method: one full training step per backbone and image size (markdown tables).

Training step = what ``dsn_lab.train`` does per batch, as in the released ``train_cse_resnet_sketchy_ext.py``:
the student forward on 3 views (un-augmented + 2 augmented) of S sketches + P photos with their domain
flags, the frozen teacher forward on the un-augmented images, the DSN objective (CE + SAKE-KD with a
cid_mask + SupCon on the two augmented views' L2-normalised codes + memory loss), backward, Adam step.
Paper batch: S = 32, P = 64. Random weights (``pretrained=False``): speed does not depend on the values,
and CSE-ResNet50's ImageNet weights need the hub. The teacher has the backbone's architecture.

    python benchmarks/bench_method.py                       # paper batch, 64 and 224 px (224 px: a GPU;
                                                            # on a 24 GiB CPU CSE-ResNet50 runs out of memory)
    python benchmarks/bench_method.py --sizes 224 --sketches 8 --photos 16   # 224 px on the CPU
    python benchmarks/bench_method.py --quick               # tiny batch, one timed step: checks that it runs
    python benchmarks/bench_method.py --backbones resnet18 --sizes 64 --device cuda

Reported: seconds per step (median), samples/s (S + P per step) and images/s (3 (S + P) student images
per step). Sections are functions returning markdown; ``main()`` prints each in turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsn_lab.config import get_preset  # noqa: E402
from dsn_lab.memory import SketchMemory  # noqa: E402
from dsn_lab.model import ImageNetTeacher, build_backbone, build_model  # noqa: E402
from dsn_lab.step import dsn_losses  # noqa: E402

BACKBONES = ("cse_resnet50", "efficientnet_lite0", "resnet18")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train_step(
    backbone: str,
    image_size: int,
    sketches: int = 32,
    photos: int = 64,
    *,
    steps: int = 3,
    warmup: int = 1,
    num_classes: int = 100,
    hashing_dim: int = 64,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` full DSN training steps (after ``warmup`` untimed ones); returns a result row."""
    device = torch.device(device)
    torch.manual_seed(seed)
    cfg = get_preset(
        "cpu-quick", backbone=backbone, pretrained=False, hashing_dim=hashing_dim, channels_last=channels_last
    )
    model = build_model(cfg, num_classes).to(device).train()
    trunk, _, _ = build_backbone(backbone, pretrained=False)
    fc_w = torch.randn(1000, model.feature_dim) * 0.01
    teacher = ImageNetTeacher(trunk, fc_w, torch.zeros(1000)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-4)
    memory = SketchMemory(num_classes, cfg.memory_slots, model.feature_dim).to(device)
    g = torch.Generator().manual_seed(seed)

    def images(k: int) -> torch.Tensor:
        x = torch.randn(k, 3, image_size, image_size, generator=g).to(device)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    batch = {
        "sketch": images(sketches),
        "photo": images(photos),
        "sketch_views": [images(sketches), images(sketches)],
        "photo_views": [images(photos), images(photos)],
        "sketch_label": torch.randint(0, num_classes, (sketches,), generator=g).to(device),
        "photo_label": torch.randint(0, num_classes, (photos,), generator=g).to(device),
    }
    cid = torch.rand(num_classes, 1000, generator=g).to(device)
    n = sketches + photos

    def step() -> float:  # the trainer's step: dsn_lab.step.dsn_losses, backward, Adam
        loss = dsn_losses(model, batch, cfg, teacher=teacher, memory=memory, cid_mask=cid)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {
        "backbone": backbone,
        "size": image_size,
        "batch": f"{sketches}+{photos}",
        "s/step": sec,
        "samples/s": n / sec,
        "images/s": 3 * n / sec,
        "loss": "dsn_lab.step.dsn_losses (CE + SAKE-KD + SupCon + memory)",
    }


def train_step_section(args: argparse.Namespace) -> str:
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            print(f"  timing {backbone} at {size} px ...", file=sys.stderr, flush=True)
            rows.append(
                bench_train_step(
                    backbone,
                    size,
                    args.sketches,
                    args.photos,
                    steps=args.steps,
                    warmup=args.warmup,
                    device=args.device,
                    channels_last=args.channels_last,
                )
            )
    lines = [
        f"## One DSN training step ({args.device}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed step(s), median)",
        "",
        "| backbone | image px | batch (S+P) | s/step | samples/s | images/s (3 views) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['size']} | {r['batch']} | {r['s/step']:.3f} | {r['samples/s']:.1f} "
            f"| {r['images/s']:.1f} |"
        )
    loss = rows[0]["loss"] if rows else "-"
    lines += ["", f"Loss: {loss}; teacher forward on the un-augmented images included."]
    return "\n".join(lines)


SECTIONS = {"train": train_step_section}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny batch (2+4), 1 timed step: checks that it runs")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    p.add_argument("--sketches", type=int, default=32)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = p.parse_args(argv)
    if args.quick:
        args.sketches, args.photos, args.steps, args.warmup = 2, 4, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.sections:
        print(SECTIONS[name](args))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
