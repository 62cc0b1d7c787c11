"""dsn_lab/demo.py: the README's headline check (the demo's end-to-end runs are in tests/test_cli.py)."""

from __future__ import annotations

import pytest

from dsn_lab import cli, demo


def _rows(frozen: float, head: float, dsn: float, baseline: float | None = None) -> dict:
    rows = {
        "frozen ImageNet features": {"mAP@all": frozen},
        "head trained on frozen features": {"mAP@all": head},
    }
    if baseline is not None:
        rows["CE + KD baseline, backbone trained (epoch 3)"] = {"mAP@all": baseline}
    rows["DSN, backbone trained (epoch 4)"] = {"mAP@all": dsn}
    return rows


@pytest.mark.parametrize(
    ("frozen", "head", "dsn", "cut", "holds"),
    [
        (0.118, 0.314, 0.328, False, True),  # the README's run: 2.78x, +0.014 over the head
        (0.118, 0.314, 0.290, False, False),  # 2.46x: below the ratio
        (0.100, 0.340, 0.330, False, False),  # 3.3x, but the head on frozen features is better
        (0.100, 0.200, 0.250, False, True),  # exactly 2.5x counts
        (0.118, 0.314, 0.328, True, False),  # a run cut short by the time guard does not count
    ],
)
def test_headline_needs_the_ratio_the_head_and_a_complete_run(frozen, head, dsn, cut, holds):
    claim = demo.check_headline(_rows(frozen, head, dsn), cut_short=cut)
    assert claim["holds"] is holds
    assert claim["ratio"] == pytest.approx(dsn / frozen)
    assert (claim["dsn"], claim["frozen"], claim["head"]) == (dsn, frozen, head)
    assert f"DSN {dsn:.3f}" in claim["text"] and f"frozen {frozen:.3f}" in claim["text"]
    assert ("holds" if holds else "NOT MET") in claim["text"]


def test_headline_reads_dsn_from_the_last_row_not_the_baseline():
    claim = demo.check_headline(_rows(0.1, 0.2, 0.26, baseline=0.5), cut_short=False)
    assert claim["dsn"] == 0.26 and claim["holds"]


def test_cli_exits_3_with_the_numbers_when_the_claim_fails(monkeypatch, capsys):
    seen = {}

    def fake_run_demo(**kwargs):
        seen.update(kwargs)
        raise demo.ClaimNotMetError("demo --check-claim failed: README claim ...: NOT MET: DSN 0.290 = 2.46x")

    monkeypatch.setattr(cli, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--check-claim", "--max-seconds", "0"]) == 3
    assert seen["check_claim"] is True and seen["max_seconds"] == 0
    assert "NOT MET: DSN 0.290" in capsys.readouterr().err
