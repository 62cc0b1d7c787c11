"""The course notebooks: static rules (fast) and a full execution of each one with its QUICK defaults (slow).

Runner choice: **nbclient**, driven from ordinary pytest tests, rather than nbmake or papermill.
- ``make test`` runs plain ``pytest -n 2 --dist loadgroup``; nbmake only collects notebooks when called
  with ``--nbmake notebooks/`` (outside ``testpaths``), so it would need a second command line, and its
  items cannot carry our ``slow`` marker or per-test environment.
- papermill's one advantage, injecting parameter values, is not needed: CI runs the committed defaults
  (``QUICK = True``) as they are, which is also what a reader runs first. papermill is not a dependency;
  nbclient (and ipykernel) are in the dev extra.
- One parametrized test per notebook, so pytest-xdist spreads them over the workers; each gets its own
  temporary folders for figures and runs (``DSN_LAB_FIGURES``, ``DSN_LAB_RUNS``) so CI never overwrites
  the committed figures; the kernel inherits the worker's share of the CPU threads (``conftest.py``).
Datasets are built in the normal cache (``DSN_LAB_DATA`` or ``~/.cache/dsn_lab``): the builders are
file-locked, and a user runs the notebooks against that cache too.

Each execution records its wall time in ``<tmp>/timing.json`` and prints it (``pytest -s`` shows it); the
budget (3 minutes with QUICK on a 2-core CPU) is enforced only when ``DSN_LAB_NB_BUDGET_S`` is set, because
timings on a shared CI machine are noisy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
EXPECTED = (
    "00_setup.ipynb",
    "01_data_preparation.ipynb",
    "02_model_and_losses.ipynb",
    "03_training.ipynb",
    "04_evaluation.ipynb",
    "05_ablations.ipynb",
    "06_domain_gap.ipynb",
    "07_retrieval_explorer.ipynb",
)
BADGE_URL = "https://colab.research.google.com/github/{owner}/blob/main/notebooks/{name}"
OWNER = "dsn-lab/dsn-lab"
# Definitions that belong in the package, not in a notebook.
FORBIDDEN = (
    (re.compile(r"^\s*class\s+\w+\s*\([^)]*\b(nn\.)?Module\b", re.M), "an nn.Module subclass"),
    (re.compile(r"^\s*class\s+\w+\s*\([^)]*Function\b", re.M), "an autograd Function"),
    (re.compile(r"^\s*def\s+\w*loss\w*\s*\(", re.M | re.I), "a loss function"),
    (re.compile(r"^\s*def\s+\w*(average_precision|mean_ap|map_at|precision_at|metric)\w*\s*\(", re.M | re.I),
     "a metric"),
)


def _notebooks() -> list[Path]:
    return sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


NB_PARAMS = [pytest.param(name, id=name.split(".")[0]) for name in EXPECTED]


def test_every_notebook_is_there():
    present = {p.name for p in _notebooks()}
    missing = [n for n in EXPECTED if n not in present]
    extra = sorted(present - set(EXPECTED))
    assert not missing, f"notebooks missing from {NB_DIR}: {missing} (run python scripts/make_notebooks.py)"
    assert not extra, f"unexpected numbered notebooks {extra}: add them to EXPECTED in {__file__}"


@pytest.mark.parametrize("name", NB_PARAMS)
def test_notebook_is_valid_and_has_no_outputs(name):
    path = NB_DIR / name
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path}: cells {dirty} have outputs or execution counts. Commit notebooks output-free: "
        "python scripts/make_notebooks.py (or Jupyter's 'Clear All Outputs')."
    )


@pytest.mark.parametrize("name", NB_PARAMS)
def test_parameters_cell_has_quick_default(name):
    nb = _read(NB_DIR / name)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    cell = tagged[0]
    assert cell.cell_type == "code"
    assert re.search(r"^QUICK\s*=\s*True\b", cell.source, re.M), (
        f"{name}: the parameters cell must set QUICK = True"
    )
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is cell, f"{name}: the parameters cell must be the first code cell"


@pytest.mark.parametrize("name", NB_PARAMS)
def test_colab_badge(name):
    nb = _read(NB_DIR / name)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    url = BADGE_URL.format(owner=OWNER, name=name)
    assert url in first_md.source, f"{name}: the first markdown cell must hold the Open in Colab badge {url}"
    assert "colab-badge.svg" in first_md.source


@pytest.mark.parametrize("name", NB_PARAMS)
def test_no_model_loss_or_metric_defined_in_notebook(name):
    nb = _read(NB_DIR / name)
    for i, src in enumerate(_code(nb)):
        for pattern, what in FORBIDDEN:
            m = pattern.search(src)
            assert m is None, (
                f"{name}, code cell {i}: defines {what} ({m.group(0).strip()!r}); "
                "put it in dsn_lab and import it"
            )


def test_forbidden_patterns_catch_definitions():
    """The checks above must be able to fail."""
    bad = ["class Head(nn.Module):\n    pass", "class Head(torch.nn.Module):", "def my_loss(x):",
           "def contrastive_loss(a, b):", "  def mean_average_precision(q, g):"]
    for src in bad:
        assert any(p.search(src) for p, _ in FORBIDDEN), src
    ok = ["loss = objective(x)", "print(model.loss)", "class Config:\n    pass"]
    for src in ok:
        assert not any(p.search(src) for p, _ in FORBIDDEN), src


def test_notebooks_match_generator():
    script = ROOT / "scripts" / "make_notebooks.py"
    if not script.is_file():
        pytest.skip(f"{script} not present")
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"notebooks differ from scripts/notebook_cells.py: {proc.stdout}{proc.stderr}\n"
        "Edit the cells there and run python scripts/make_notebooks.py (or port your notebook edit)."
    )


def _cell_walls(cells, started: datetime) -> list[tuple[float, int]]:
    """(seconds, index) per executed code cell: from the previous cell's reply (or the start) to this one's,
    so time spent before the kernel picked the request up counts too (nbclient's metadata timestamps)."""
    walls, previous = [], started
    for index, cell in enumerate(cells):
        reply = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
        if cell.cell_type != "code" or not reply:
            continue
        end = datetime.fromisoformat(reply.replace("Z", "+00:00"))
        walls.append(((end - previous).total_seconds(), index))
        previous = end
    return walls


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", NB_PARAMS)
def test_notebook_executes_with_quick_defaults(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    path = NB_DIR / name
    nb = _read(path)
    figures, runs = tmp_path / "figures", tmp_path / "runs"
    monkeypatch.setenv("DSN_LAB_FIGURES", str(figures))
    monkeypatch.setenv("DSN_LAB_RUNS", str(runs))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NB_DIR)}},
    )
    started, start = datetime.now(timezone.utc), time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    slowest = sorted(_cell_walls(nb.cells, started), reverse=True)[:3]
    (tmp_path / "timing.json").write_text(json.dumps({"notebook": name, "seconds": seconds,
                                                      "slowest_cells": [[i, s] for s, i in slowest]}))
    cells = ", ".join(f"cell {i} {s:.1f} s" for s, i in slowest)
    print(f"\n{name}: executed in {seconds:.1f} s (slowest: {cells})")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors  # nbclient raises first; kept as a guard against allow_errors
    budget = os.environ.get("DSN_LAB_NB_BUDGET_S")
    if budget:
        assert seconds <= float(budget), f"{name} took {seconds:.0f} s, over the budget of {budget} s"
