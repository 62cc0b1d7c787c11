"""Write the numbered course notebooks (notebooks/NN_*.ipynb) from the cell texts in this file.

Why a generator: the notebooks are JSON, hard to review and to keep consistent by hand (badge, parameters
cell, setup cell). Editing the text here and running ``python scripts/make_notebooks.py`` rewrites them
output-free with stable cell ids, so diffs stay small. ``--check`` exits 1 when a notebook on disk differs
from what this script would write (for CI or a pre-commit hook). Editing a notebook in Jupyter is fine too;
then port the change here before regenerating.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebook_cells import NOTEBOOKS  # noqa: E402

REPO = "dsn-lab/dsn-lab"  # OWNER/NAME placeholder of the GitHub repository
NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def badge(filename: str) -> str:
    url = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{filename}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def build(filename: str, cells: list[tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    stem = filename.split("_")[0]
    for i, (kind, text, tags) in enumerate(cells):
        text = dedent(text).strip("\n").replace("{{BADGE}}", badge(filename))
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
    stale = []
    for filename, cells in NOTEBOOKS.items():
        if args.names and filename not in args.names:
            continue
        text = nbformat.writes(build(filename, cells)) + "\n"
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
