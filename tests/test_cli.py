"""``python -m dsn_lab``: --help on every command, --set parsing, train then evaluate end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsn_lab import cli
from dsn_lab.data.fixtures import make_synthetic_emojisketch

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dsn_lab", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "train", "evaluate", "data"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "command, expected",
    [("demo", "--quick"), ("train", "--preset"), ("evaluate", "CHECKPOINT"), ("data", "ACTION")],
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
    assert any((out / "features").glob("*.npz"))  # the feature cache was used

    assert cli.main(["evaluate", str(tmp_path / "nope.pt")]) == 1
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    """The CI-sized demo with the baseline: EmojiSketch (built from npm on first use), four rows, the domain
    gap before/after, figures, results JSON."""
    out, figs = tmp_path / "run", tmp_path / "figures"
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
            "--figures",
            str(figs),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for row in ("frozen ImageNet features", "head trained on frozen features", "CE + KD baseline, backbone",
                "DSN, backbone trained", "domain gap (unseen concepts)", "after: DSN",
                "after: CE + KD baseline"):
        assert row in proc.stdout
    assert "figures written to" in proc.stdout
    res = json.loads((out / "demo_results.json").read_text())
    assert len(res["rows"]) == 4
    assert list(res["rows"])[-1].startswith("DSN")
    assert set(res["domain_gap"]) == {"DSN", "CE + KD baseline"}
    for stages in res["domain_gap"].values():
        for g in stages.values():
            assert 0.5 <= g["domain_classifier_acc"] <= 1.0 and g["mmd"] >= -0.05
    for vals in res["rows"].values():
        assert set(vals) == {"mAP@all", "P@100", "mAP@200", "P@200"}
        assert all(0.0 <= v <= 1.0 for v in vals.values())
    assert res["rows"]["frozen ImageNet features"]["mAP@all"] > 0.05  # far above chance (about 0.02)
    assert {"ce", "kd", "contrastive", "memory"} <= set(res["losses_last_epoch"])
    for name in ("demo_training_curves.png", "demo_retrieval_grid.png", "demo_projection.png",
                 "demo_domain_gap.png"):
        assert (figs / name).stat().st_size > 10_000
