"""Run course notebooks in full (``QUICK = False``), as a student does after flipping the switch.

    .venv/bin/python scripts/course_full_runs.py            # 03, 04, 06, 05 in that order
    .venv/bin/python scripts/course_full_runs.py 04 06      # only these

Each notebook's parameters cell is run with ``QUICK = False`` and everything else as committed (papermill's
injected cell would come *after* the parameters cell, too late for the values derived from ``QUICK``). The
runs land in ``runs/`` (or ``--runs-dir``) and are reused: 04-06 find 03's run, 05 finds 06's baseline,
and a second call trains nothing. Full runs write ``figures/<name>.png`` and ``results/<name>.json`` in
this clone (QUICK runs write ``-quick`` files, so they never replace these): the files committed in
``figures/`` and ``results/`` that the notebooks show beside their own output. The executed notebooks go
to ``runs/course-full/``. On the 2-core CPU a run takes about 8 minutes, so the first call takes more
than two hours (05 trains 16 runs); one interrupted resumes its runs where they stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ORDER = ("03", "04", "06", "05")


def notebook_for(prefix: str) -> Path:
    found = sorted((ROOT / "notebooks").glob(f"{prefix}_*.ipynb"))
    if len(found) != 1:
        raise SystemExit(f"course_full_runs: expected one notebooks/{prefix}_*.ipynb, found {len(found)}")
    return found[0]


def switch_to_full(nb: nbformat.NotebookNode, path: Path) -> None:
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None or "QUICK = True" not in cell.source:
        raise SystemExit(f"course_full_runs: {path} has no parameters cell with 'QUICK = True' to switch")
    cell.source = cell.source.replace("QUICK = True", "QUICK = False", 1)


def run(prefix: str, out_dir: Path) -> float:
    path = notebook_for(prefix)
    nb = nbformat.read(path, as_version=4)
    switch_to_full(nb, path)
    out = out_dir / path.name
    start = time.perf_counter()
    print(f"course_full_runs: {path.name} with QUICK = False ...", flush=True)
    client = NotebookClient(
        nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:  # the executed notebook, also when a cell failed: its traceback is in there
        nbformat.write(nb, out)
    elapsed = time.perf_counter() - start
    print(f"course_full_runs: {path.name} done in {elapsed:.0f} s -> {out}", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", default=list(DEFAULT_ORDER), help="notebook numbers, e.g. 03 05"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "course-full")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        help="where the runs go (sets DSN_LAB_RUNS for the notebooks; default: runs/ in this clone). A "
        "folder outside the clone keeps them across clones, so an interrupted call resumes where it stopped.",
    )
    args = parser.parse_args(argv)
    if args.runs_dir is not None:
        os.environ["DSN_LAB_RUNS"] = str(args.runs_dir.expanduser().resolve())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    times = {prefix: run(prefix, args.out_dir) for prefix in args.notebooks}
    print("course_full_runs: " + ", ".join(f"{p} {t:.0f} s" for p, t in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
