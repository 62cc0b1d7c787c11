"""Command line: ``python -m dsn_lab {demo,train,evaluate,data,emojisketch} ...`` (``--help`` on each).

The one CLI tree of the package: every argparse parser lives here (the data layer has none).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from PIL import Image

from dsn_lab import plots
from dsn_lab._atomic import atomic_write_text
from dsn_lab.checkpoint import CheckpointError
from dsn_lab.config import PRESETS, DSNConfig, get_preset
from dsn_lab.data import (
    DATASET_NAMES,
    EMOJISKETCH_VERSIONS,
    SPECS,
    ChecksumError,
    DatasetImageError,
    DatasetLayoutError,
    DownloadError,
    SplitError,
    default_root,
    emojisketch,
    fetch_dataset,
    get_dataset,
    import_archive,
    is_emojisketch,
)
from dsn_lab.data.datasets import emojisketch_expected, emojisketch_splits
from dsn_lab.data.registry import ARCHIVES, SPLIT_FILES
from dsn_lab.demo import ClaimNotMetError, run_demo
from dsn_lab.embed import evaluate_checkpoint, evaluate_frozen_backbone, format_results_table
from dsn_lab.preflight import PreflightError, preflight
from dsn_lab.provenance import environment_differences, format_environment
from dsn_lab.train import TrainingDivergedError, train


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["lr=3e-4", "use_kd=false", "steps_per_epoch=none"]`` -> typed overrides of DSNConfig fields.

    Each value is converted to the type of the field's default: bools accept true/false/1/0/yes/no,
    ``none``/``null`` gives None, anything else is parsed as JSON first (numbers, lists, dicts) and kept as
    a string otherwise. An unknown field raises a ValueError listing the known ones.
    """
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
    atomic_write_text(Path(out), json.dumps(res, indent=2))
    print(format_results_table(res))
    print(format_run_environment(res))
    print(f"results written to {out}")
    return 0


def format_run_environment(res: dict[str, Any]) -> str:
    """The environment that trained the checkpoint (and, where it differs, the one that evaluated it)."""
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
DEMO_WALL = "about 8.5 minutes"  # `make demo` from a warm cache on the idle 2-core CPU (measured 516 s)
QUICK_WALL = "about 65 s from a warm cache"  # `demo --quick` on the same machine (measured 65 s)


def _add_demo(sub: Any) -> None:
    demo_cfg = get_preset("emoji-demo")
    p = sub.add_parser(
        "demo",
        help="train DSN on the offline EmojiSketch benchmark on the CPU; before/after table and figures",
        description="Build EmojiSketch on first use (npm packages), train DSN from ImageNet EfficientNet-"
        f"Lite0 on the training concepts (CPU, a fixed {demo_cfg.epochs * demo_cfg.steps_per_epoch} "
        f"optimiser steps, the backbone's first {demo_cfg.frozen_stages} stages frozen, stem counted: the "
        "same numbers on any machine), and print, for the unseen concepts, frozen ImageNet features vs a "
        "head trained on frozen "
        f"features vs DSN ({DEMO_WALL} from a warm cache on a 2-core CPU), queried by one OpenMoji drawing "
        "per concept (v1's protocol) and by every line-art style of EmojiSketch v2 (on the default folders "
        "built once on first use, about 2 minutes). Writes its results and figures "
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
        help="guard: stop training after this many seconds (default 1800, quick 600; 0: no guard); a run it "
        "cuts short says so, and its numbers are not comparable",
    )
    p.add_argument(
        "--check-claim",
        action="store_true",
        help="exit with status 3 unless the run reproduces the README's headline (DSN mAP@all >= 0.40, "
        ">= 2.5x the frozen features' and >= 0.08 above the head on frozen features); CI runs the full "
        "demo with it",
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
    multi = p.add_mutually_exclusive_group()
    multi.add_argument(
        "--no-multi-style",
        dest="multi_style",
        action="store_false",
        help="skip the multi-style rows (and so the EmojiSketch v2 build they need on first use)",
    )
    multi.add_argument(
        "--multi-style-root",
        help="EmojiSketch v2 folder whose multi-style queries are scored (default: the v2 build in the "
        "data folder, $DSN_LAB_DATA or ~/.cache/dsn_lab, made on first use); a v1 --data-root gets these "
        "rows only from this; a v2 --data-root uses its own",
    )
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
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
            check_claim=args.check_claim,
            multi_style=args.multi_style,
            multi_style_root=args.multi_style_root,
        )
    except PreflightError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ClaimNotMetError as exc:
        print(exc, file=sys.stderr)
        return 3
    return 0


# ---------------------------------------------------------------------------------------------------
# data: fetch, import and inspect datasets
# ---------------------------------------------------------------------------------------------------
def _add_data(sub: Any) -> None:
    parser = sub.add_parser("data", help="fetch, import and inspect datasets")
    parser.set_defaults(handler=_run_data)
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    p = actions.add_parser(
        "fetch",
        help="download (where public) and install a dataset and its official split files",
        description="Download and install NAME with its official split lists (pinned, sha256-checked). "
        "emojisketch is built from npm packages. Downloads resume when run again.",
    )
    p.add_argument("name", choices=DATASET_NAMES, metavar="NAME", help=f"one of: {', '.join(DATASET_NAMES)}")
    p.add_argument(
        "--root", type=Path, help="dataset folder (default: $DSN_LAB_DATA/<name> or ~/.cache/dsn_lab/<name>)"
    )
    p.add_argument(
        "--splits-only", action="store_true", help="only fetch and verify the official split lists"
    )
    p.add_argument("--splits-dir", type=Path, help="folder with local copies of the split lists")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive in the cache")
    p.add_argument(
        "--variant", default="full", choices=("full", "tiny"), help="emojisketch only: full or tiny"
    )

    p = actions.add_parser(
        "import",
        help="install a dataset from an archive you already have",
        description="Bring your own archive (licence-restricted data, or a download done in a "
        "browser): extract ARCHIVE next to the dataset root and move the dataset folder into place.",
    )
    p.add_argument(
        "archive", type=Path, metavar="ARCHIVE", help=".zip or .tar(.gz) holding the dataset folders"
    )
    p.add_argument(
        "--name", required=True, choices=DATASET_NAMES, metavar="NAME", help="dataset the archive holds"
    )
    p.add_argument("--root", type=Path, help="where to install (default: the dataset's default root)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty root")

    p = actions.add_parser(
        "info",
        help="counts per split and domain, checked against the official sizes",
        description="Print a table of images and classes per split/domain for NAME.",
    )
    p.add_argument("name", choices=DATASET_NAMES, metavar="NAME", help=f"one of: {', '.join(DATASET_NAMES)}")
    p.add_argument("--root", type=Path, help="dataset folder (default: the dataset's default root)")
    p.add_argument("--splits-dir", type=Path, help="folder with local copies of the split lists")
    p.add_argument(
        "--check",
        default="exists",
        choices=("none", "exists", "decode"),
        help="none: count the lists only; exists: also look for each file; decode: also decode each image",
    )

    actions.add_parser(
        "sources",
        help="list the registry of download sources",
        description="Show every pinned split file and image archive (URL, size, sha256).",
    )


def _run_data(args: argparse.Namespace) -> int:
    try:
        if args.data_command == "fetch":
            if is_emojisketch(args.name):
                version = EMOJISKETCH_VERSIONS[args.name]
                print(emojisketch.ensure_emojisketch(args.root, variant=args.variant, version=version))
                return 0
            root = fetch_dataset(
                args.name,
                args.root,
                splits_only=args.splits_only,
                keep_archive=args.keep_archive,
                splits_dir=args.splits_dir,
            )
            print(f"[dsn_lab] {args.name}: ready at {root}")
            return 0
        if args.data_command == "import":
            import_archive(args.archive, args.name, args.root, overwrite=args.overwrite)
            return 0
        if args.data_command == "info":
            return _data_info(args)
        if args.data_command == "sources":
            return _data_sources()
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"error: {exc}")
        return 1
    raise AssertionError(args.data_command)


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _data_info(args: argparse.Namespace) -> int:
    root = args.root or default_root(args.name)
    if is_emojisketch(args.name):  # expected: the counts its build recorded, as loading checks them
        pairs, expected = emojisketch_splits(root), emojisketch_expected(root)
    else:
        pairs, expected = list(SPECS[args.name].lists), SPECS[args.name].expected
    if not pairs:
        print(f"{args.name}: nothing at {root}. Run: python -m dsn_lab data fetch {args.name}")
        return 1
    have_images = root.is_dir()
    check = args.check if have_images else "none"
    rows = []
    status = 0
    for split, domain in pairs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = get_dataset(
                    args.name,
                    root,
                    split=split,
                    domain=domain,
                    splits_dir=args.splits_dir,
                    check=check,
                    on_error="skip",
                    verbose=False,
                    build=False,
                )
                n, n_cls, skipped = len(ds), len(ds.classes), len(ds.skipped)
                note = (
                    f"{skipped:,} missing/unreadable"
                    if skipped
                    else ("lists only" if check == "none" else "ok")
                )
            except Exception as exc:  # a table row per problem, not a traceback
                n, n_cls, note, status = None, None, _short(f"error: {str(exc).splitlines()[0]}"), 1
        exp = expected.get((split, domain))
        if n is not None and exp is not None and n != exp:
            note += f"; differs from the official {exp:,}"
        del caught
        rows.append(
            (
                split,
                domain,
                "-" if n is None else f"{n:,}",
                "-" if n_cls is None else str(n_cls),
                "-" if exp is None else f"{exp:,}",
                note,
            )
        )
    header = ("split", "domain", "images", "classes", "expected", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(
        f"{args.name} at {root}" + ("" if have_images else "  (no images there: counts from the split lists)")
    )
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return status


def _data_sources() -> int:
    print("Image archives:")
    for src in ARCHIVES.values():
        print(
            f"  {src.key}: {src.url}\n    holds {', '.join(src.layouts)}; "
            f"sha256 {src.sha256 or 'not pinned'}\n"
            f"    {src.note}"
        )
    print("Official split files (pinned commits):")
    for rf in SPLIT_FILES.values():
        pin = f"sha256 {rf.sha256}" if rf.sha256 else f"git blob {rf.git_blob}"
        print(f"  {rf.url}\n    {'?' if rf.size is None else f'{rf.size:,}'} bytes, {pin}")
    return 0


# ---------------------------------------------------------------------------------------------------
# emojisketch: the card of the offline benchmark, and the frozen-ImageNet score on it
# ---------------------------------------------------------------------------------------------------
def _add_emojisketch(sub: Any) -> None:
    p = sub.add_parser(
        "emojisketch",
        help="build EmojiSketch on first use and print its card (--baseline: the frozen-ImageNet mAP)",
        description=(emojisketch.__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("--root", help="EmojiSketch folder (default: the user cache)")
    p.add_argument("--variant", default="full", choices=("full", "tiny"))
    p.add_argument(
        "--version",
        type=int,
        default=1,
        choices=emojisketch.VERSIONS,
        help="1: one OpenMoji sketch per concept; 2: several per concept (line-art sets + pseudo-sketches)",
    )
    p.add_argument("--baseline", action="store_true", help="also score frozen ImageNet EfficientNet-Lite0")
    p.add_argument(
        "--quick", action="store_true", help="baseline on at most 64 sketches/photos (a smoke test)"
    )
    p.add_argument(
        "--sheet",
        metavar="PNG",
        help="also draw a contact sheet: per concept its first photo and every sketch (v2: every style)",
    )
    p.add_argument(
        "--sheet-classes",
        nargs="+",
        metavar="CLASS",
        help="the concepts of the sheet (default: the 4 unseen and 2 training concepts with most sketches)",
    )
    p.set_defaults(handler=_run_emojisketch)


def _contact_sheet(root: Path, out: str, classes: list[str] | None) -> Path:
    """Draw ``classes`` (default: the 4 unseen and 2 training concepts with the most sketches) as rows."""
    manifest = emojisketch.read_manifest(root) or {}
    splits = {c: m.get("split") for c, m in manifest.get("concepts", {}).items()}
    if not classes:
        count = {c: len(list((Path(root) / "sketch" / c).glob("*.png"))) for c in splits}
        best = sorted(count, key=lambda c: (-count[c], c))
        classes = [c for c in best if splits[c] == "zero"][:4] + [c for c in best if splits[c] == "train"][:2]
    rows = []
    for cls in classes:
        imgs = emojisketch.concept_images(root, cls)
        cells = [(f"photo: {imgs['photo'][0][0]}", Image.open(imgs["photo"][0][1]))] if imgs["photo"] else []
        cells += [(src, Image.open(p)) for src, p in imgs["sketch"]]
        rows.append((f"{cls}\n({splits.get(cls, '?')})", cells))
    plots.plot_contact_sheet(rows, save_to=out, dpi=110)  # 112 px images: more dpi only adds bytes
    return Path(out)


def _run_emojisketch(args: argparse.Namespace) -> int:
    root = emojisketch.ensure_emojisketch(args.root, args.variant, version=args.version)
    print(emojisketch.card(root))
    if args.sheet:
        print(f"contact sheet: {_contact_sheet(root, args.sheet, args.sheet_classes)}")
    if args.baseline:
        t0 = time.perf_counter()
        res = evaluate_frozen_backbone(root, max_per_split=64 if args.quick else None)
        print(
            "frozen ImageNet EfficientNet-Lite0, unseen classes, sketch -> photo "
            f"({time.perf_counter() - t0:.0f} s):"
        )
        for k, v in res.items():
            print(f"  {k}: {v:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dsn_lab",
        description="DSN (IJCAI 2021) zero-shot sketch-based image retrieval: demo, training, evaluation, "
        "data, the EmojiSketch benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_demo(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_data(sub)
    _add_emojisketch(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
