"""The newcomer's front door: no user path needs root, installs come from a lock, CI walks the front door.

The walk itself (fresh clone, empty HOME, Debian's WordNet hidden, ``make demo DEMO_ARGS=--quick``) is
``scripts/front_door_check.sh``; CI runs it after the suite (``make front-door`` in ``.ci/run``). These
tests guard what that walk cannot see: a notebook or package line that reaches for ``apt-get``, ``sudo`` or
``/usr/share``, and a lock that no longer covers what ``pyproject.toml`` asks for.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (the dev extra installs it there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ROOT_ONLY = re.compile(r"apt-get|\bsudo\b|/usr/share")
# Package lines allowed to name a root-only route: the optional Debian WordNet fallback of dsn_lab.semantics
# (tried after the shipped rows and the pip route) and install hints that offer it as one option among others.
ALLOWED = {"dsn_lab/semantics.py"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _normalise(Requirement(spec).name)


def _applies_here(spec: str) -> bool:
    marker = Requirement(spec).marker
    return marker is None or marker.evaluate()


def test_no_notebook_cell_needs_root():
    offenders = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and ROOT_ONLY.search(source):
                offenders.append(f"{path.name} cell {i}")
    assert not offenders, f"notebook cells that need root (apt-get/sudo//usr/share): {offenders}"


def test_package_reaches_root_only_routes_only_where_allowed():
    offenders = []
    for path in sorted((ROOT / "dsn_lab").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ROOT_ONLY.search(line):
                offenders.append(f"{rel}:{lineno}: {line.strip()}")
    assert not offenders, "package code naming a root-only route outside the allowed fallback:\n" + "\n".join(
        offenders
    )


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _lock() -> dict[str, str]:
    lock = ROOT / "requirements" / "lock.txt"
    pins: dict[str, str] = {}
    for lineno, line in enumerate(lock.read_text(encoding="utf-8").splitlines(), 1):
        spec = line.split("#")[0].strip()
        if not spec:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)(\s*;.*)?", spec)
        assert m, f"requirements/lock.txt line {lineno} is not an exact pin 'name==version': {line!r}"
        pins[_normalise(m.group(1))] = m.group(2)
    return pins


def test_lock_pins_every_dependency_of_pyproject():
    project = _pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in ("lab", "dev"):
        wanted += project["optional-dependencies"][extra]
    pins = _lock()
    missing = sorted({_requirement_name(s) for s in wanted if _applies_here(s)} - set(pins))
    assert not missing, (
        f"requirements/lock.txt lacks {missing}, which pyproject.toml asks for: run `make lock` "
        "(scripts/lock_requirements.sh) and commit the new lock"
    )


def test_jupyter_servers_are_an_extra_not_forced_onto_colab():
    project = _pyproject()["project"]
    runtime = {_requirement_name(s) for s in project["dependencies"]}
    assert not runtime & {"jupyterlab", "voila", "notebook"}, "Jupyter servers belong in the [lab] extra"
    assert {"jupyterlab", "voila"} <= {_requirement_name(s) for s in project["optional-dependencies"]["lab"]}


@pytest.mark.parametrize("installer", ["Makefile", "environment.yml"])
def test_installers_use_the_lock(installer):
    text = (ROOT / installer).read_text(encoding="utf-8")
    uses_lock = re.search(r"-r\s+(\$\(LOCK\)|requirements/lock\.txt)", text)
    assert uses_lock, f"{installer} must install from the lock"
    if installer == "Makefile":
        assert "LOCK := requirements/lock.txt" in text


def test_ci_walks_the_front_door_after_the_suite():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # a command line may start with environment assignments (DEMO_ARGS='...' make front-door)
    commands = [re.sub(r"^(\w+=('[^']*'|\S*)\s+)*", "", line.strip()) for line in ci]
    commands = [c for c in commands if c.startswith("make ")]
    assert commands[0] == "make test" and "make front-door" in commands, commands
    walk = next(line for line in ci if line.strip().endswith("make front-door"))
    # the full demo, uncapped, checking the README's headline (not --quick, whose DSN row is not a result)
    assert "--check-claim" in walk and "--max-seconds 0" in walk and "--quick" not in walk, walk
    script = (ROOT / "scripts" / "front_door_check.sh").read_text(encoding="utf-8")
    assert "unshare -m" in script and "/usr/share/wordnet" in script
    assert re.search(r"DEMO_ARGS-+-quick", script), "the walk runs make demo with DEMO_ARGS=--quick"
