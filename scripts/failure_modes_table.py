"""Print the README's "Failure modes" table from the docstrings of tests/test_faults.py.

Why generated: the table must say what the package does, and the tests are what prove it; writing the
table from the tests keeps the two from drifting apart. Each test docstring has two paragraphs, the fault
and then what the package does. Tests still marked xfail (behaviour not there yet) are flagged in the row.

    python scripts/failure_modes_table.py                 # markdown to stdout
    python scripts/failure_modes_table.py --output FILE   # or into a file
    python scripts/failure_modes_table.py --check README.md  # exit 1 if README's table is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests" / "test_faults.py"
HEADER = "| Fault tried | What dsn_lab does | Test (`tests/test_faults.py`) |\n|---|---|---|\n"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _xfail_reasons(func: ast.FunctionDef) -> list[str]:
    """Reasons of xfail marks on the test itself or on one of its parametrize cases."""
    reasons = []
    for node in ast.walk(ast.Module(body=[*func.decorator_list], type_ignores=[])):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "xfail":
            for kw in node.keywords:
                if kw.arg == "reason":
                    try:
                        reasons.append(str(ast.literal_eval(kw.value)))
                    except ValueError:
                        reasons.append("see the test")
    return reasons


def rows(path: Path = TESTS) -> list[tuple[str, str, str]]:
    """(fault, behaviour, test name) for every documented test in ``path``, in file order."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        doc = ast.get_docstring(node) or ""
        parts = [p for p in doc.split("\n\n") if p.strip()]
        if len(parts) < 2:
            raise SystemExit(f"{path}:{node.lineno}: {node.name} needs a docstring of two paragraphs")
        fault, behaviour = _one_line(parts[0]), _one_line(" ".join(parts[1:]))
        for reason in _xfail_reasons(node):
            behaviour += f" **Not yet (xfail): {_one_line(reason)}.**"
        out.append((fault, behaviour, node.name))
    return out


def table(path: Path = TESTS) -> str:
    return HEADER + "".join(f"| {f} | {b} | `{name}` |\n" for f, b, name in rows(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write the table to this file")
    parser.add_argument("--check", type=Path, help="exit 1 unless this file contains the current table")
    args = parser.parse_args(argv)
    text = table()
    if args.check is not None:
        if text not in args.check.read_text(encoding="utf-8"):
            print(f"{args.check}: the Failure modes table is out of date; regenerate it with {__file__}")
            return 1
        return 0
    if args.output is not None:
        args.output.write_text("## Failure modes\n\n" + _INTRO + text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


_INTRO = (
    "Each fault below is produced for real by a test (a process killed with SIGKILL, a local server that "
    "cuts the connection, a tmpfs that fills up, a pickle that runs code), and the row says what the "
    "package does. The table is generated from the tests' docstrings: "
    "`python scripts/failure_modes_table.py`.\n\n"
)

if __name__ == "__main__":
    sys.exit(main())
