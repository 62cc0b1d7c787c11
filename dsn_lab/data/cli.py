"""``python -m dsn_lab data {fetch,import,info,sources}``: get datasets and see what is on disk."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dsn_lab.data.datasets import DATASET_NAMES

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser(
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

    p = sub.add_parser(
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

    p = sub.add_parser(
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

    sub.add_parser(
        "sources",
        help="list the registry of download sources",
        description="Show every pinned split file and image archive (URL, size, sha256).",
    )


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _info(args: argparse.Namespace) -> int:
    from dsn_lab.data import get_dataset
    from dsn_lab.data.datasets import SPECS, default_root, emojisketch_expected, emojisketch_splits

    root = args.root or default_root(args.name)
    if args.name == "emojisketch":  # expected: the counts its build recorded, as loading checks them
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


def _sources() -> int:
    from dsn_lab.data.fetch import ARCHIVES, SPLIT_FILES

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


def run(args: argparse.Namespace) -> int:
    from dsn_lab.data import fetch

    try:
        if args.data_command == "fetch":
            if args.name == "emojisketch":
                from dsn_lab.data.emojisketch import ensure_emojisketch

                print(ensure_emojisketch(args.root, variant=args.variant))
                return 0
            root = fetch.fetch_dataset(
                args.name,
                args.root,
                splits_only=args.splits_only,
                keep_archive=args.keep_archive,
                splits_dir=args.splits_dir,
            )
            print(f"[dsn_lab] {args.name}: ready at {root}")
            return 0
        if args.data_command == "import":
            fetch.import_archive(args.archive, args.name, args.root, overwrite=args.overwrite)
            return 0
        if args.data_command == "info":
            return _info(args)
        if args.data_command == "sources":
            return _sources()
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"error: {exc}")
        return 1
    raise AssertionError(args.data_command)
