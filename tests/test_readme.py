"""README.md: the two Quick-start commands, the CI wiring, and the generated Failure modes table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S)
    assert m, "README.md needs a '## Quick start' section with a bash block"
    return m.group(1)


def test_quick_start_is_exactly_make_demo_and_make_test():
    commands = [line.split("#")[0].strip() for line in _quick_start().splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must call the README's test command (make test)"


def test_failure_modes_table_is_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "failure_modes_table.py"), "--check", str(README)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_unfilled_section_markers():
    left = re.findall(r"<!-- [A-Z]+ -->", README.read_text(encoding="utf-8"))
    assert not left, f"README.md still has placeholder markers {left}"


def test_readme_names_every_preset_and_every_paper_fix():
    """The reproduction section lists each preset and has one table row per fix the *-paper presets make
    (dsn_lab.config.PAPER_FIXES / PAPER_SPEED), each a real config field: adding a quirk without documenting
    it, or renaming a field, fails here."""
    import dataclasses

    from dsn_lab.config import PAPER_FIXES, PAPER_SPEED, PRESETS, DSNConfig

    text = README.read_text(encoding="utf-8")
    missing_presets = [name for name in PRESETS if f"`{name}`" not in text]
    assert not missing_presets, f"README.md does not name the presets {missing_presets}"
    fields = {f.name for f in dataclasses.fields(DSNConfig)}
    table = re.search(r"\| field \(one per quirk\).*?\n\n", text, re.S)
    assert table, "README.md needs the '| field (one per quirk) |' table of released vs paper presets"
    for name in {**PAPER_FIXES, **PAPER_SPEED}:
        assert name in fields, f"PAPER_FIXES names {name!r}, which is not a DSNConfig field"
        assert f"`{name}`" in table.group(0), f"the README's fixes table has no row for `{name}`"
