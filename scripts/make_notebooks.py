"""Write the numbered course notebooks (notebooks/NN_*.ipynb) from the cell texts in this file.

Why a generator: the notebooks are JSON, hard to review and to keep consistent by hand (badge, parameters
cell, setup cell). The repository address has one source, ``[project.urls] Repository`` in
``pyproject.toml``, and the version comes from ``[project] version``: the Colab badges open the notebooks
on the repository's ``main`` branch, and the install cell installs the package at tag ``v<version>``.
Editing the text in ``notebook_cells.py`` and running ``python scripts/make_notebooks.py`` rewrites the
notebooks output-free with stable cell ids, so diffs stay small. ``--check`` exits 1 when a notebook on disk
differs from what this script would write (for CI or a pre-commit hook). Editing a notebook in Jupyter is
fine too; then port the change there before regenerating.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebook_cells import NOTEBOOKS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
PYPROJECT = ROOT / "pyproject.toml"
GITHUB = "https://github.com/"


def project_source(pyproject: Path = PYPROJECT) -> tuple[str, str]:
    """(repository URL, version): ``[project.urls] Repository`` and ``[project] version`` in pyproject."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    url = project.get("urls", {}).get("Repository", "")
    version = project.get("version", "")
    owner_name = url.removeprefix(GITHUB).strip("/")
    if not url.startswith(GITHUB) or owner_name.count("/") != 1 or not version:
        raise SystemExit(
            f"{pyproject}: expected [project] version and [project.urls] Repository = "
            f'"{GITHUB}OWNER/NAME" (the notebooks\' badges and install cells come from them); found '
            f"Repository = {url!r}, version = {version!r}."
        )
    return url.rstrip("/"), version


def colab_url(repository: str, filename: str) -> str:
    """Where the badge opens ``notebooks/<filename>``: the repository's main branch, on Colab."""
    owner_name = repository.removeprefix(GITHUB)
    return f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{filename}"


def badge(repository: str, filename: str) -> str:
    url = colab_url(repository, filename)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def build(filename: str, cells: list[tuple[str, str, list[str]]], repository: str, version: str
          ) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    stem = filename.split("_")[0]
    for i, (kind, text, tags) in enumerate(cells):
        text = dedent(text).strip("\n").replace("{{BADGE}}", badge(repository, filename))
        text = text.replace("{{REPOSITORY}}", repository).replace("{{VERSION}}", version)
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell.id = f"nb{stem}-{i:02d}"
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the notebooks on disk")
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args(argv)
    NB_DIR.mkdir(exist_ok=True)
    repository, version = project_source()
    stale = []
    for filename, cells in NOTEBOOKS.items():
        if args.names and filename not in args.names:
            continue
        text = nbformat.writes(build(filename, cells, repository, version)) + "\n"
        path = NB_DIR / filename
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(filename)
            continue
        tmp = path.with_suffix(".ipynb.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path.relative_to(NB_DIR.parent)}")
    if stale:
        print("out of date (run python scripts/make_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
