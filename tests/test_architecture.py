"""The one-way house: the import contracts of pyproject.toml hold, and the package says why a module is long.

DESIGN.md promises that data flows one way (data -> model -> step -> train -> checkpoint -> embed ->
analysis / plots / widgets -> demo / cli) and that nothing imports upward. The contracts live in
``[tool.importlinter]`` of pyproject.toml; import-linter builds the graph from every import statement,
function-local ones included, so a cycle cannot hide inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the [dev] extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dsn_lab"
LONG_MODULE_LINES = 700

importlinter = pytest.importorskip(
    "importlinter", reason="import-linter is a [dev] dependency: pip install -e '.[dev]'"
)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_contracts_hold(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, f"an import breaks the one-way house (pyproject.toml [tool.importlinter]):\n{out}"


def test_every_module_is_placed_in_a_layer():
    # The layers contract is `exhaustive`: a new module fails lint-imports until it is given a layer. This
    # checks the same from the file system, so the message names the file.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {name.strip(" ()") for layer in layers for name in layer.replace("|", ":").split(":")}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert present <= placed, f"modules without a layer in pyproject.toml: {sorted(present - placed)}"


def _function_local_package_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("dsn_lab")
            ):
                found.append(f"{name}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                found.append(f"{name}:{node.lineno} relative import inside a function")
            elif isinstance(node, ast.Import) and any(a.name.startswith("dsn_lab") for a in node.names):
                found.append(f"{name}:{node.lineno} import dsn_lab...")
    return found


def test_package_imports_sit_at_the_top_of_each_module():
    # A function-local import of the package is how the old cycles hid; heavy optional third-party libraries
    # may still be imported lazily (each with a comment saying why), the package itself may not.
    found = [hit for path in _modules() for hit in _function_local_package_imports(path)]
    assert not found, "package imports inside functions:\n" + "\n".join(found)


def test_a_long_module_says_why_it_is_long():
    too_long = []
    for path in _modules():
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines <= LONG_MODULE_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if "Why this module is long:" not in doc:
            too_long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not too_long, (
        f"modules over {LONG_MODULE_LINES} lines need a 'Why this module is long:' sentence in their "
        f"docstring, or a split: {too_long}"
    )


def test_the_contracts_catch_an_upward_import_and_a_hidden_cycle(tmp_path):
    # A copy of the package with two breaches planted: embed importing the trainer (upward across the
    # checkpoint), and the data layer reaching up to the model from inside a function (how the old cycle hid).
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "src" / "dsn_lab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    embed = copy / "embed.py"
    embed.write_text(embed.read_text(encoding="utf-8") + "\nfrom dsn_lab.train import train  # planted\n")
    fixtures = copy / "data" / "fixtures.py"
    fixtures.write_text(
        fixtures.read_text(encoding="utf-8")
        + "\n\ndef _planted():\n    from dsn_lab.model import build_model\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0, run.stdout + run.stderr
    assert "dsn_lab.embed -> dsn_lab.train" in run.stdout
    assert "dsn_lab.data.fixtures -> dsn_lab.model" in run.stdout
    assert _function_local_package_imports(fixtures), "the AST check misses a function-local package import"
