"""Memory-bank update + loss at the paper batch: the released per-sample loop vs the vectorised fixed mode.

Paper batch (Sketchy): 32 sketches, 64 photos, 100 seen classes, 10 slots, 2048-d pooled features. One
"step" is ``update`` then ``loss``, as in the training loop. Two phases: an empty bank (start of an
epoch: only filling) and a full bank (steady state: every sketch goes through the replacement rule).
Target (issue 4): fixed >= 20x faster than faithful on the CPU, full-bank phase.

    python benchmarks/bench_memory.py            # CPU, prints a markdown table
    python benchmarks/bench_memory.py --quick    # a few repetitions, to check that it runs
    python benchmarks/bench_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsn_lab.memory import SketchMemory  # noqa: E402


def _batches(
    n: int, args: argparse.Namespace, device: torch.device, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        # ReLU-like non-negative features, as the pooled backbone features are
        s = torch.rand(args.sketches, args.dim, generator=g)
        p = torch.rand(args.photos, args.dim, generator=g)
        ls = torch.randint(0, args.classes, (args.sketches,), generator=g)
        lp = torch.randint(0, args.classes, (args.photos,), generator=g)
        out.append(tuple(t.to(device) for t in (s, ls, p, lp)))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(mem: SketchMemory, batches, device: torch.device, reset: bool) -> list[float]:
    """Seconds per step; ``reset``: flush before every step (empty-bank phase)."""
    times = []
    for s, ls, p, lp in batches:
        if reset:
            mem.flush()
        _sync(device)
        t0 = time.perf_counter()
        mem.update(s, ls, p, lp)
        loss = mem.loss(p, lp)
        _sync(device)
        times.append(time.perf_counter() - t0)
        del loss
    return times


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    warm = _batches(args.warmup, args, device, seed=0)
    timed = _batches(args.reps, args, device, seed=1)
    rows = []
    for phase, reset in (("empty bank (epoch start)", True), ("full bank (steady state)", False)):
        medians = {}
        for faithful in (True, False):
            mem = SketchMemory(args.classes, args.slots, args.dim, faithful=faithful).to(device)
            for s, ls, p, lp in warm:  # fills the bank, and warms up kernels / allocator
                mem.update(s, ls, p, lp)
                mem.loss(p, lp)
            medians[faithful] = statistics.median(_time_steps(mem, timed, device, reset)) * 1e3
        rows.append(
            {
                "phase": phase,
                "faithful_ms": medians[True],
                "fixed_ms": medians[False],
                "speedup": medians[True] / medians[False],
            }
        )
    return rows


def markdown(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    head = (
        f"Memory update + loss, {args.sketches} sketches / {args.photos} photos, {args.classes} classes, "
        f"{args.slots} slots, {args.dim}-d, device {args.device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.reps} steps\n\n"
        "| phase | faithful (per-sample loop) ms | fixed (vectorised) ms | speed-up |\n|---|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['phase']} | {r['faithful_ms']:.3f} | {r['fixed_ms']:.3f} | {r['speedup']:.1f}x |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions: check that it runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--sketches", type=int, default=32)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--slots", type=int, default=10)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=80, help="steps before timing (80 fill ~all 100x10 slots)")
    ap.add_argument("--target", type=float, default=20.0, help="required speed-up, full-bank phase")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 20, 40
    rows = run(args)
    print(markdown(rows, args))
    steady = rows[-1]["speedup"]
    verdict = "meets" if steady >= args.target else "MISSES"
    print(f"full-bank speed-up {steady:.1f}x {verdict} the {args.target:.0f}x target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
