"""Command line: ``python -m dsn_lab {demo,train,evaluate,data} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["lr=3e-4", "use_kd=false", "steps_per_epoch=none"]`` -> typed overrides of DSNConfig fields.

    Each value is converted to the type of the field's default: bools accept true/false/1/0/yes/no,
    ``none``/``null`` gives None, anything else is parsed as JSON first (numbers, lists, dicts) and kept as
    a string otherwise. An unknown field raises a ValueError listing the known ones.
    """
    import dataclasses

    from dsn_lab.config import DSNConfig

    defaults = {f.name: getattr(DSNConfig(), f.name) for f in dataclasses.fields(DSNConfig)}
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=3e-4")
        key, raw = (s.strip() for s in item.split("=", 1))
        key = key.replace("-", "_")
        if key not in defaults:
            raise ValueError(
                f"--set {key}: unknown config field. Known fields: {', '.join(sorted(defaults))}"
            )
        default = defaults[key]
        low = raw.lower()
        if low in ("none", "null"):
            value: Any = None
        elif isinstance(default, bool):
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(f"--set {key}={raw}: expected true or false")
            value = low in ("true", "1", "yes", "on")
        elif isinstance(default, int) and not isinstance(default, bool):
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"--set {key}={raw}: expected an integer") from None
        elif isinstance(default, float):
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"--set {key}={raw}: expected a number") from None
        elif isinstance(default, str):
            value = raw
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if key in ("steps_per_epoch",) and isinstance(value, str):
                raise ValueError(f"--set {key}={raw}: expected an integer or none")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------
def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train DSN from a preset (also under torchrun for several GPUs)",
        description="Train DSN with a named preset and optional overrides. Writes last.pt / best.pt, "
        "history.json / history.csv to the output folder. Several GPUs: torchrun --nproc-per-node N "
        "-m dsn_lab train ... (the preset's batch sizes are the global batch).",
    )
    p.add_argument(
        "--preset", default="cpu-quick", help="preset name (see --list-presets); default cpu-quick"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a config field, e.g. --set lr=3e-4 --set epochs=5 (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start again even if output_dir holds a run")
    p.add_argument("--output-dir", help="where checkpoints and history go (default: the preset's)")
    p.add_argument("--data-root", help="dataset folder (default: $DSN_LAB_DATA/<name> or ~/.cache/dsn_lab)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dsn_lab.config import PRESETS, get_preset

    if args.list_presets:
        for name, cfg in PRESETS.items():
            print(
                f"{name:<22} {cfg.dataset:<12} {cfg.backbone:<18} dim {cfg.hashing_dim:<4} "
                f"epochs {cfg.epochs}"
            )
        return 0
    try:
        overrides = parse_set(args.overrides)
        if args.output_dir:
            overrides["output_dir"] = args.output_dir
        cfg = get_preset(args.preset, **overrides)
    except (KeyError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_json())
        return 0
    from dsn_lab.data.datasets import DatasetImageError, DatasetLayoutError, SplitError
    from dsn_lab.data.fetch import ChecksumError, DownloadError
    from dsn_lab.preflight import PreflightError, preflight
    from dsn_lab.train import CheckpointError, TrainingDivergedError, train

    try:  # what the run needs, before the model is built or any list is downloaded
        preflight(cfg, data_root=args.data_root or cfg.data_root, output_dirs=[cfg.output_dir])
    except PreflightError as exc:
        print(exc, file=sys.stderr)
        return 1

    try:
        res = train(
            cfg, resume=args.resume, data_root=args.data_root, device=args.device, overwrite=args.overwrite
        )
    except (
        CheckpointError,
        TrainingDivergedError,
        FileExistsError,
        DatasetLayoutError,
        DatasetImageError,
        SplitError,
        DownloadError,
        ChecksumError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    best = f"{res.best_metric:.4f}" if res.best_metric is not None else "n/a"
    if res.stopped == "time budget":
        print(
            f"WARNING: max_train_seconds={cfg.max_train_seconds:g} stopped training before the "
            f"{res.planned_steps} optimiser steps the config asks for: not comparable with a complete run.",
            file=sys.stderr,
        )
    print(
        f"done ({res.stopped}): {res.selection} best {best} at epoch {res.best_epoch}; checkpoints "
        f"{res.final_checkpoint}"
        + (f", {res.best_checkpoint}" if res.best_checkpoint else "")
        + f"; history {res.output_dir / 'history.csv'}"
    )
    if res.best_checkpoint:
        print(f"next: python -m dsn_lab evaluate {res.best_checkpoint}")
    return 0


# ---------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------
def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="zero-shot retrieval of a checkpoint, as a table beside the paper's numbers",
        description="Embed the unseen-class sketches and photos with CHECKPOINT, compute mAP@all, P@100, "
        "mAP@200, P@200 for real-valued codes and ITQ binary codes (DSN protocol), write a results JSON and "
        "print a table beside the published DSN and SAKE numbers.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a last.pt / best.pt from train")
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint config's)")
    p.add_argument("--split", default="zero", help="split to evaluate (default zero: the unseen classes)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cache-dir", help="feature cache folder (default: <checkpoint folder>/features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-binary", action="store_true", help="skip the ITQ binary-code row")
    p.add_argument(
        "--amp",
        action="store_true",
        help="embed under CUDA autocast (bf16/fp16) instead of fp32 (the released protocol): faster, "
        "slightly different mAP (demo checkpoint, bf16: mAP@all -0.0015); no effect on the CPU",
    )
    p.add_argument(
        "--output", type=Path, help="results JSON path (default: <checkpoint folder>/results_<split>.json)"
    )
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from dsn_lab.embed import evaluate_checkpoint, format_results_table
    from dsn_lab.train import CheckpointError

    ckpt = args.checkpoint
    cache = None if args.no_cache else (args.cache_dir or ckpt.parent / "features")
    try:
        res = evaluate_checkpoint(
            ckpt,
            data_root=args.data_root,
            split=args.split,
            device=args.device,
            batch_size=args.batch_size,
            cache_dir=cache,
            num_workers=args.num_workers,
            binary=not args.no_binary,
            amp=args.amp,
        )
    except (CheckpointError, FileNotFoundError, ValueError, OSError) as exc:
        # ValueError: e.g. NaN features from a diverged checkpoint (metrics refuses them, naming why)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = args.output or ckpt.parent / f"results_{args.split}.json"
    from dsn_lab.train import _atomic_write_text

    _atomic_write_text(Path(out), json.dumps(res, indent=2))
    print(format_results_table(res))
    print(format_run_environment(res))
    print(f"results written to {out}")
    return 0


def format_run_environment(res: dict[str, Any]) -> str:
    """The environment that trained the checkpoint (and, where it differs, the one that evaluated it)."""
    from dsn_lab.provenance import environment_differences, format_environment

    trained, now = res.get("environment"), res.get("eval_environment")
    if not trained:
        return "trained in: unknown (the run folder has no environment.json: an older dsn_lab)"
    lines = [format_environment(trained, title="trained with")]
    if now:
        diff = environment_differences(trained, now)
        lines.append(
            "evaluated with the same packages, devices and commit"
            if not diff
            else "evaluated with other software or devices: " + "; ".join(diff)
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------------
DEMO_WALL = "about 6.5 minutes"  # `make demo` from a warm cache on the 2-core CPU (measured 391 s)
QUICK_WALL = "about 65 s from a warm cache"  # `demo --quick` on the same machine (measured 65 s)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train DSN on the offline EmojiSketch benchmark on the CPU; before/after table and figures",
        description="Build EmojiSketch on first use (npm packages), train DSN from ImageNet EfficientNet-"
        "Lite0 on the training concepts (CPU, a fixed 160 optimiser steps: the same numbers on any "
        "machine), and print, for the unseen concepts, frozen ImageNet features vs a head trained on frozen "
        f"features vs DSN ({DEMO_WALL} from a warm cache on a 2-core CPU). Writes its results and figures "
        "into its run folder (runs/emoji-demo); `--baseline --figures-dir figures` regenerates the README's "
        "figures (make figures).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI-sized run: 12 optimiser steps, {QUICK_WALL} (its numbers are not meaningful)",
    )
    p.add_argument("--data-root", help="EmojiSketch folder (default: built under ~/.cache/dsn_lab)")
    p.add_argument(
        "--figures-dir",
        "--figures",
        dest="figures_dir",
        help="folder for the figures (default: <run folder>/figures; `figures` replaces the README's)",
    )
    p.add_argument("--output-dir", help="run folder (default: runs/emoji-demo, or runs/emoji-quick)")
    p.add_argument(
        "--max-seconds",
        "--seconds",
        dest="max_seconds",
        type=float,
        help="guard: stop training after this many seconds (default 1800, quick 600); a run it cuts short "
        "says so, and its numbers are not comparable",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a config field of the demo preset (repeatable)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also train the CE + KD baseline (SAKE's objective) for the same steps: a fourth row and "
        "its domain gap (doubles the training time)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from dsn_lab.demo import run_demo
    from dsn_lab.preflight import PreflightError

    try:
        overrides = parse_set(args.overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run_demo(
            quick=args.quick,
            data_root=args.data_root,
            figures=not args.no_figures,
            figures_dir=args.figures_dir,
            output_dir=args.output_dir,
            max_seconds=args.max_seconds,
            overrides=overrides,
            baseline=args.baseline,
        )
    except PreflightError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsn_lab",
        description="DSN (IJCAI 2021) zero-shot sketch-based image retrieval: demo, training, evaluation, "
        "data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_demo(sub)
    _add_train(sub)
    _add_evaluate(sub)

    from dsn_lab.data import cli as data_cli

    data_parser = sub.add_parser("data", help="fetch, import and inspect datasets")
    data_cli.add_arguments(data_parser)
    data_parser.set_defaults(handler=data_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
