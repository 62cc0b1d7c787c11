"""dsn_lab.course, the helpers the notebooks call: real (tiny) training runs on synthetic data."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import dsn_lab.course as C
from dsn_lab.config import get_preset
from dsn_lab.data.fixtures import make_synthetic_emojisketch
from dsn_lab.train import load_history, train


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_emojisketch(tmp_path_factory.mktemp("data") / "synth", per_class=3, size=32)


def _cfg(out: Path, data: Path, **kw):
    base = dict(
        output_dir=str(out),
        data_root=str(data),
        epochs=2,
        steps_per_epoch=3,
        checkpoint_every=1,
        log_every=1,
        image_size=32,
        kdneg=0.0,
    )
    return get_preset("cpu-quick", **{**base, **kw})


def test_pick_device_seeds_and_caps_threads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    try:
        assert C.pick_device(7, max_threads=1, verbose=False) == torch.device("cpu")
        first = torch.rand(3)
        C.pick_device(7, verbose=False)
        assert torch.equal(first, torch.rand(3))
        assert torch.get_num_threads() == 1  # a cap already lower is never raised
    finally:
        torch.set_num_threads(before)


def test_preset_config_builds_emojisketch_only_for_emoji_presets(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(
        C,
        "ensure_emojisketch",
        lambda variant, progress, version: built.append((variant, version)) or tmp_path,
    )
    cfg = C.preset_config("emoji-quick", variant="tiny", output_dir=tmp_path / "run", epochs=1)
    version = C.EMOJISKETCH_VERSIONS[get_preset("emoji-quick").dataset]
    assert built == [("tiny", version)] and cfg.data_root == str(tmp_path)
    C.preset_config("emoji-quick", dataset="emojisketch-v2", output_dir=tmp_path / "run")
    assert built[-1] == ("tiny", 2)
    assert cfg.output_dir == str(tmp_path / "run") and cfg.epochs == 1 and cfg.preset == "emoji-quick"
    cfg = C.preset_config("sketchy-s1-paper", output_dir="x")
    assert len(built) == 2 and cfg.data_root == get_preset("sketchy-s1-paper").data_root


def test_train_live_draws_while_training_and_raises_its_errors(synth, tmp_path, monkeypatch, capsys):
    shown: list[tuple[Figure, str]] = []

    def slow_epoch_end(model, epoch, step):  # gives the drawing thread time to see a history mid-run
        time.sleep(0.6)
        return {}

    cfg = _cfg(tmp_path / "run", synth)
    out = tmp_path / "curves.png"
    result = C.train_live(
        cfg,
        device="cpu",
        refresh_s=0.05,
        callbacks=[slow_epoch_end],
        save_to=out,
        show=lambda fig, status: shown.append((fig, status)),
    )
    assert result.stopped == "completed" and result.final_checkpoint.is_file() and out.is_file()
    assert all(isinstance(fig, Figure) for fig, _ in shown)
    assert any(", epoch " in status for _, status in shown[:-1]), [s for _, s in shown]  # a live redraw
    assert shown[-1][1].startswith("finished (completed)")
    # a thread an interrupted cell left running on this folder is waited for, then the finished run returns
    leftover = threading.Thread(target=time.sleep, args=(0.3,))
    leftover.start()
    monkeypatch.setitem(C._LIVE, str(Path(cfg.output_dir).resolve()), leftover)
    again = C.train_live(cfg, device="cpu", refresh_s=0.05, show=lambda fig, status: None)
    assert "waiting for the training" in capsys.readouterr().out and not leftover.is_alive()
    assert len(again.history) == len(result.history)
    with pytest.raises(FileNotFoundError, match="no-data-here"):  # raised in the training thread
        C.train_live(_cfg(tmp_path / "bad", tmp_path / "no-data-here"), device="cpu", show=lambda f, s: None)


def test_train_until_killed_leaves_a_run_to_resume(synth, tmp_path):
    cfg = _cfg(tmp_path / "run", synth, epochs=3, steps_per_epoch=4)
    killed = C.train_until_killed(cfg, device="cpu", poll_s=0.05)
    assert killed is not None and killed["returncode"] != 0, killed  # killed, not finished
    assert killed["position"]["epoch"] * 4 + killed["position"].get("batch", 0) < 12
    assert C.train_until_killed(cfg, device="cpu") is None  # a checkpoint is there: nothing started
    done = train(cfg, resume=True, device="cpu", verbose=False)
    assert done.stopped == "completed"
    assert [r["step"] for r in load_history(cfg.output_dir) if r.get("kind") == "step"][-1] == 12


def test_train_until_killed_records_the_gap_of_the_epoch_it_finished(synth, tmp_path):
    """Checkpoints at epoch ends only (notebook 03's full run): the attempt is killed after epoch 1, and
    that epoch's row, which the resumed run keeps, has the gap measures and its codes, as ensure_run's."""
    cfg = _cfg(tmp_path / "run", synth, epochs=3, steps_per_epoch=4, checkpoint_every=1000)
    assert C.train_until_killed(cfg, device="cpu", poll_s=0.05) is not None
    saved = json.loads(C.load_checkpoint(Path(cfg.output_dir) / C.LAST_NAME)["history"])  # resumed from
    epochs = [r for r in saved if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1] and "gap/mmd" in epochs[0]
    assert [p.name for p in (Path(cfg.output_dir) / C.GAP_CODES_DIR).iterdir()] == ["epoch001.npz"]


def test_train_until_killed_reports_a_child_that_fails(synth, tmp_path):
    cfg = _cfg(tmp_path / "run", tmp_path / "no-data-here")
    with pytest.raises(RuntimeError, match="before its first checkpoint") as err:
        C.train_until_killed(cfg, device="cpu", timeout_s=120)
    assert "exit code 1" in str(err.value) and "no-data-here" in str(err.value)  # the child's own error


def _trained(folder: Path) -> int:
    """How many times training started in ``folder``: every start writes environment.json, keeping the
    earlier starts' records under "earlier"; a finished run that is only returned writes nothing."""
    env = folder / "environment.json"
    return 1 + len(json.loads(env.read_text()).get("earlier", [])) if env.is_file() else 0


def test_run_folder_names_a_configuration_not_a_notebook(synth, tmp_path):
    cfg = _cfg(tmp_path / "a", synth)
    folder = C.run_folder(cfg, tmp_path / "runs")
    assert folder.parent == tmp_path / "runs" and folder.name.startswith("cpu-quick-dsn-seed1-")
    # what a resume ignores (output folder, logging, checkpoint interval, time guard) names the same run
    same = cfg.replace(output_dir="elsewhere", log_every=5, checkpoint_every=9, max_train_seconds=60.0)
    assert C.run_folder(same, tmp_path / "runs") == folder
    baseline = cfg.replace(use_contrastive=False, use_memory=False)
    others = [
        baseline,
        cfg.replace(seed=2),
        cfg.replace(epochs=3),
        cfg.replace(data_root=str(tmp_path / "synth-full")),  # another data folder: another run
    ]
    names = [C.run_folder(c, tmp_path / "runs").name for c in others]
    assert len({folder.name, *names}) == 5, names
    assert names[0].startswith("cpu-quick-ce-kd-seed1-") and "-seed2-" in names[1]
    assert "-ce-kd-supcon-" in C.run_folder(cfg.replace(use_memory=False), tmp_path).name


def test_ensure_run_trains_a_configuration_once_and_records_the_gap(synth, tmp_path, capsys):
    runs = tmp_path / "runs"
    cfg = _cfg(tmp_path / "ignored", synth)
    first = C.ensure_run(cfg, runs, device="cpu")
    folder = C.run_folder(cfg, runs)
    assert first.output_dir == folder and first.stopped == "completed" and _trained(folder) == 1
    assert "training the missing run" in capsys.readouterr().out
    epochs = [r for r in first.history if r.get("kind") == "epoch"]
    assert len(epochs) == 2 and all("gap/domain_classifier_acc" in r for r in epochs), epochs[-1].keys()
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")}
    # another notebook asking for the same configuration (other logging settings) reuses it
    again = C.ensure_run(cfg.replace(log_every=2, checkpoint_every=3), runs, device="cpu")
    assert "reusing the finished run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")} == stamp and _trained(folder) == 1
    assert again.history == first.history and again.best_checkpoint == first.best_checkpoint
    assert sorted(p.name for p in runs.iterdir()) == [folder.name]
    # the codes the recorder measured at each epoch end are kept for notebook 06's maps
    assert sorted(p.name for p in (folder / C.GAP_CODES_DIR).iterdir()) == ["epoch001.npz", "epoch002.npz"]
    # a notebook that shows live curves gets the reused run's final curves, saved where it asks
    curves = tmp_path / "figs" / "curves.png"
    C.ensure_run(cfg, runs, device="cpu", live=True, save_to=curves)
    assert curves.is_file() and "reused " + folder.name in capsys.readouterr().out
    assert _trained(folder) == 1


def test_ensure_run_uses_a_checkpoint_given_and_trains_nothing(synth, tmp_path, capsys):
    cfg = _cfg(tmp_path / "ignored", synth)
    done = C.ensure_run(cfg, tmp_path / "drive", device="cpu", verbose=False)
    here = tmp_path / "runs"
    for given in (done.output_dir, done.final_checkpoint):  # a run folder, or a checkpoint file in one
        result = C.ensure_run(cfg, here, checkpoint=given, device="cpu")
        assert result.output_dir == done.output_dir and result.history == done.history
        assert "nothing trained" in capsys.readouterr().out
    assert result.best_checkpoint == done.final_checkpoint  # the file given is the one to evaluate
    assert not here.exists() and _trained(done.output_dir) == 1
    with pytest.raises(FileNotFoundError, match="CHECKPOINT = .*no run there"):
        C.ensure_run(cfg, here, checkpoint=tmp_path / "nowhere", device="cpu")
    cut = tmp_path / "cut"  # a run stopped by its time budget is not finished: not used as it is
    train(_cfg(cut, synth, max_train_seconds=1e-3), device="cpu", verbose=False)
    with pytest.raises(RuntimeError, match="not finished"):
        C.ensure_run(cfg, here, checkpoint=cut, device="cpu")


def test_run_ablations_trains_each_rung_once_and_tabulates(synth, tmp_path):
    base = _cfg(tmp_path / "unused", synth, epochs=1, steps_per_epoch=2)
    ladder = {"SAKE baseline": {"use_contrastive": False, "use_memory": False}, "full DSN": {}}
    shared = C.ensure_run(base, tmp_path / "runs", device="cpu", verbose=False)  # e.g. notebook 03's run
    runs = C.run_ablations(base, ladder, tmp_path / "runs", seeds=(1, 2), device="cpu", verbose=False)
    assert list(runs["run"]) == ["SAKE baseline"] * 2 + ["full DSN"] * 2
    assert list(runs["seed"]) == [1, 2, 1, 2]
    assert runs[["mAP@all", "P@100"]].apply(lambda c: c.between(0, 1)).all().all()
    folders = sorted((tmp_path / "runs").iterdir())
    expected = [
        C.run_folder(base.replace(seed=s, **ladder[n]), tmp_path / "runs") for n in ladder for s in (1, 2)
    ]
    assert folders == sorted(expected) and all(_trained(f) == 1 for f in folders)
    assert runs["checkpoint"][2] == str(shared.best_checkpoint or shared.final_checkpoint)  # reused
    ckpt = Path(runs["checkpoint"][0])
    stamp = ckpt.stat().st_mtime_ns
    again = C.run_ablations(base, ladder, tmp_path / "runs", seeds=(1, 2), device="cpu", verbose=False)
    assert ckpt.stat().st_mtime_ns == stamp  # finished runs are evaluated, not trained again
    assert all(_trained(f) == 1 for f in folders)
    pd.testing.assert_series_equal(again["mAP@all"], runs["mAP@all"])
    # two names for one configuration are one run
    twice = C.run_ablations(
        base, {"full DSN": {}, "DSN again": {}}, tmp_path / "runs", device="cpu", verbose=False
    )
    assert twice["checkpoint"].nunique() == 1 and sorted((tmp_path / "runs").iterdir()) == folders

    table = C.ablation_table(runs, order=["full DSN", "SAKE baseline"])
    assert list(table.index) == ["full DSN", "SAKE baseline"]
    mean = runs[runs["run"] == "full DSN"]["mAP@all"].mean()
    assert table.loc["full DSN", ("mAP@all", "mean")] == pytest.approx(mean)
    with pytest.raises(KeyError, match="missing"):
        C.ablation_table(runs, order=["missing"])


def test_run_ablations_needs_a_run_and_a_seed(synth, tmp_path):
    base = _cfg(tmp_path / "unused", synth)
    for ladder, seeds in (({}, (1,)), ({"full DSN": {}}, ())):
        with pytest.raises(ValueError, match="at least one ablation and one seed"):
            C.run_ablations(base, ladder, tmp_path, seeds=seeds)
    assert not any(tmp_path.iterdir())


def test_paper_table_is_the_packages_record():
    table = C.paper_table()  # the published numbers (DESIGN.md, Fidelity note 6) as literals
    assert list(table.columns) == ["method", "benchmark", "mAP@all", "P@100"] and len(table) == 4
    row = table[(table["benchmark"] == "sketchy-s1") & (table["method"] == "DSN (paper)")].iloc[0]
    assert (row["mAP@all"], row["P@100"]) == (0.583, 0.704)
    tu = C.paper_table(["tuberlin"]).set_index("method")
    assert list(tu["benchmark"].unique()) == ["tuberlin"]
    assert tu.loc["SAKE (paper)", ["mAP@all", "P@100"]].tolist() == [0.475, 0.599]
    assert tu.loc["DSN (paper)", ["mAP@all", "P@100"]].tolist() == [0.484, 0.591]
    with pytest.raises(KeyError, match="quickdraw"):
        C.paper_table(["quickdraw"])


def test_default_show_prints_the_status_outside_a_notebook(capsys):
    C._show_in_notebook(Figure(), "12 s, epoch 0.50, loss 1.000")
    assert capsys.readouterr().out == "12 s, epoch 0.50, loss 1.000\n"


def test_beside_full_run_labels_which_is_which():
    this = {"mAP@all": 0.1, "steps": 8, "extra": 1}
    table = C.beside_full_run(this, {"mAP@all": 0.33}, ["mAP@all", "steps"])
    assert list(table.columns) == ["this run (QUICK)", "full run (committed results/)"]
    assert table.loc["mAP@all"].tolist() == [0.1, 0.33]
    assert math.isnan(table.loc["steps", "full run (committed results/)"])  # not in the full result
    assert list(C.beside_full_run(this, None, ["steps"]).columns) == ["this run (QUICK)"]  # no clone
    assert list(C.beside_full_run(this, {"steps": 1}, ["steps"], quick=False).columns) == ["this run (full)"]
    with pytest.raises(KeyError, match="nope"):
        C.beside_full_run(this, None, ["nope"])
