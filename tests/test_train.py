"""The training loop on tiny synthetic data: checkpoints, history, resume, config checks, NaN stop, budget."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

import dsn_lab.train as T
from dsn_lab.checkpoint import checkpoint_config
from dsn_lab.config import get_preset
from dsn_lab.data.fixtures import make_synthetic_emojisketch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faultlib  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_emojisketch(tmp_path_factory.mktemp("data") / "synth", per_class=3, size=32)


def _cfg(out: Path, **kw):
    base = dict(
        output_dir=str(out),
        epochs=2,
        steps_per_epoch=3,
        checkpoint_every=1,
        log_every=1,
        deterministic=True,
        image_size=32,
        kdneg=0.0,
    )
    base.update(kw)
    return get_preset("cpu-quick", **base)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_checkpoint_and_history(synth: Path, tmp_path: Path) -> None:
    res = T.train(_cfg(tmp_path / "run"), data_root=synth, verbose=False)
    assert res.final_checkpoint == tmp_path / "run" / "last.pt" and res.final_checkpoint.is_file()
    assert res.best_checkpoint is not None and res.best_checkpoint.is_file()
    assert res.stopped == "completed" and res.selection == "val_mAP@all"
    ckpt = torch.load(res.final_checkpoint, map_location="cpu", weights_only=True)  # safe load works
    assert ckpt["position"]["finished"] and ckpt["position"]["opt_step"] == 6
    assert checkpoint_config(ckpt).hashing_dim == 16
    steps = [r for r in res.history if r["kind"] == "step"]
    epochs = [r for r in res.history if r["kind"] == "epoch"]
    assert len(steps) == 6 and len(epochs) == 2
    for key in ("loss", "loss_ce", "loss_contrastive", "loss_memory", "acc", "lr", "time_per_step"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert all(0.0 <= r["val_mAP@all"] <= 1.0 for r in epochs)
    assert res.best_metric == max(r["val_mAP@all"] for r in epochs)
    # exp schedule (released): lr * 0.001 ** (epoch / epochs)
    assert steps[0]["lr"] == pytest.approx(1e-4)
    assert steps[-1]["lr"] == pytest.approx(1e-4 * 0.001**0.5)
    on_disk = json.loads((tmp_path / "run" / "history.json").read_text())
    assert on_disk == json.loads(json.dumps(res.history))
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss_ce", "loss_memory", "val_mAP@all", "lr"} <= set(header)


def test_callbacks_go_into_history_in_eval_mode(synth: Path, tmp_path: Path) -> None:
    seen = []

    def cb(model, epoch, step):
        seen.append((model.training, epoch, step))
        return {"probe": float(epoch) * 10}

    res = T.train(_cfg(tmp_path / "run"), data_root=synth, callbacks=[cb], verbose=False)
    assert seen == [(False, 1, 3), (False, 2, 6)]
    assert [r["probe"] for r in res.history if r["kind"] == "epoch"] == [10.0, 20.0]


@pytest.mark.parametrize("sampler", ["random", "class_aligned"])
def test_resume_reproduces_uninterrupted_run(synth: Path, tmp_path: Path, monkeypatch, sampler: str) -> None:
    copies: list[Path] = []
    real_save = T.save_checkpoint

    def spy(payload, path):
        written = real_save(payload, path)
        if Path(path).name == "last.pt":
            copy = tmp_path / "copies" / f"{len(copies)}.pt"
            copy.parent.mkdir(exist_ok=True)
            shutil.copy(written, copy)
            copies.append(copy)
        return written

    monkeypatch.setattr(T, "save_checkpoint", spy)
    cfg = _cfg(tmp_path / "full", batch_sampler=sampler)
    full = T.train(cfg, data_root=synth, verbose=False)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    end = torch.load(full.final_checkpoint, weights_only=True)
    positions = [torch.load(c, weights_only=True)["position"] for c in copies]
    assert [(p["epoch"], p["batch"]) for p in positions] == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    for i in (1, 2, 3):  # mid-epoch, epoch boundary, mid-epoch of the second epoch
        out = tmp_path / f"resumed{i}"
        out.mkdir()
        shutil.copy(copies[i], out / "last.pt")
        res = T.train(cfg.replace(output_dir=str(out)), data_root=synth, resume=True, verbose=False)
        got = torch.load(res.final_checkpoint, weights_only=True)
        assert _state_equal(end["model"], got["model"]), f"weights differ after resuming from checkpoint {i}"
        assert _state_equal(end["memory"], got["memory"])
        assert got["optimizer"]["state"][0]["step"] == end["optimizer"]["state"][0]["step"]
        assert [r.get("loss") for r in res.history] == [r.get("loss") for r in full.history]


def test_resume_of_finished_run_returns_it(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", epochs=1)
    first = T.train(cfg, data_root=synth, verbose=False)
    again = T.train(cfg, data_root=synth, resume=True, verbose=False)
    assert again.history == first.history and again.best_metric == first.best_metric


def test_existing_run_needs_resume_or_overwrite(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", epochs=1, steps_per_epoch=1)
    T.train(cfg, data_root=synth, verbose=False)
    with pytest.raises(FileExistsError, match="resume"):
        T.train(cfg, data_root=synth, verbose=False)
    T.train(cfg, data_root=synth, overwrite=True, verbose=False)


def test_nan_in_one_term_of_the_step_stops_naming_it(synth: Path, tmp_path: Path, monkeypatch) -> None:
    # faults are injected by patching the step the loop calls (the loop itself has no test hook)
    monkeypatch.setattr(T, "dsn_step", faultlib.nan_in_step(T.dsn_step, "memory", at=2))
    with pytest.raises(T.TrainingDivergedError, match="'memory' = nan is not finite at epoch 1, batch 2"):
        T.train(_cfg(tmp_path / "run"), data_root=synth, verbose=False)


def test_nan_loss_stops_naming_the_term_and_keeps_last_good_checkpoint(
    synth: Path, tmp_path: Path, monkeypatch
) -> None:
    from dsn_lab import losses

    calls = {"n": 0}
    real = losses.SupConLoss.forward

    def flaky(self, features, labels):
        calls["n"] += 1
        value = real(self, features, labels)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(losses.SupConLoss, "forward", flaky)
    cfg = _cfg(tmp_path / "run")
    with pytest.raises(T.TrainingDivergedError) as err:
        T.train(cfg, data_root=synth, verbose=False)
    msg = str(err.value)
    assert "'contrastive'" in msg and "nan" in msg and "last.pt" in msg
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["position"]["batches_seen"] == 2  # the update of the bad batch was never applied
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["kind"] == "diverged" and history[-1]["terms"] == "contrastive"


def test_time_budget_stops_and_checkpoints_mid_epoch(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", epochs=3, max_train_seconds=1e-3, lr_schedule="cosine")
    res = T.train(cfg, data_root=synth, verbose=False)
    assert res.stopped == "time budget"
    ckpt = torch.load(res.final_checkpoint, weights_only=True)
    assert (ckpt["position"]["epoch"], ckpt["position"]["batch"]) == (0, 1)
    assert [r["kind"] for r in res.history] == ["step", "epoch"]  # validated before stopping
    assert res.best_checkpoint is not None


def test_grad_accumulation_counts_optimizer_steps(synth: Path, tmp_path: Path) -> None:
    res = T.train(
        _cfg(tmp_path / "run", epochs=1, steps_per_epoch=3, grad_accum_steps=2),
        data_root=synth,
        verbose=False,
    )
    ckpt = torch.load(res.final_checkpoint, weights_only=True)
    assert ckpt["position"]["opt_step"] == 2 and ckpt["position"]["batches_seen"] == 3


def test_run_folder_records_config_and_environment(synth: Path, tmp_path: Path) -> None:
    from dsn_lab.config import DSNConfig
    from dsn_lab.provenance import ENVIRONMENT_JSON, environment_record

    cfg = _cfg(tmp_path / "run", epochs=1, steps_per_epoch=1)
    res = T.train(cfg, data_root=synth, verbose=False)
    assert DSNConfig.from_dict(json.loads((res.output_dir / T.CONFIG_JSON).read_text())) == cfg
    env = json.loads((res.output_dir / ENVIRONMENT_JSON).read_text())
    now = environment_record()
    assert env["packages"] == now["packages"] and env["git_commit"] == now["git_commit"]
    assert env["cuda"] == torch.version.cuda and "earlier" not in env
    ckpt = torch.load(res.final_checkpoint, weights_only=True)
    assert json.loads(ckpt["environment"]) == env  # a checkpoint copied alone still says where it came from


def test_resumed_run_keeps_the_earlier_sessions_environment(synth: Path, tmp_path: Path) -> None:
    from dsn_lab.provenance import read_environment

    cut = _cfg(tmp_path / "run", epochs=2, steps_per_epoch=2, max_train_seconds=1e-3)
    T.train(cut, data_root=synth, verbose=False)
    first = read_environment(tmp_path / "run")
    T.train(cut.replace(max_train_seconds=None), data_root=synth, verbose=False, resume=True)
    second = read_environment(tmp_path / "run")
    assert second["earlier"] == [first] and second["recorded_at"] >= first["recorded_at"]


def test_time_guard_reports_planned_steps_and_warns(synth: Path, tmp_path: Path, capsys) -> None:
    cfg = _cfg(tmp_path / "run", epochs=3, steps_per_epoch=4, grad_accum_steps=2, max_train_seconds=1e-3)
    res = T.train(cfg, data_root=synth, verbose=True)
    assert res.stopped == "time budget" and res.planned_steps == 3 * 2
    out = capsys.readouterr()
    assert "WARNING: max_train_seconds=0.001 stopped training at optimiser step 1 of 6" in out.out + out.err
    done = T.train(_cfg(tmp_path / "full", epochs=1, steps_per_epoch=3), data_root=synth, verbose=False)
    assert done.stopped == "completed" and done.planned_steps == 3


def test_cudnn_flags_as_released_or_auto() -> None:
    b = torch.backends.cudnn
    saved = (b.deterministic, b.benchmark)
    try:
        for cudnn, deterministic in (("released", True), ("auto", False)):
            b.deterministic, b.benchmark = False, False
            T._set_determinism(False, torch.device("cuda"), cudnn)
            assert (b.deterministic, b.benchmark) == (deterministic, True)
        T._set_determinism(True, torch.device("cuda"), "released")  # deterministic=True wins
        assert (b.deterministic, b.benchmark) == (True, False)
    finally:
        b.deterministic, b.benchmark = saved
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("flush", ["epoch", "never"])
def test_memory_flush_each_epoch_or_never(synth: Path, tmp_path: Path, flush: str) -> None:
    res = T.train(
        _cfg(tmp_path / "run", steps_per_epoch=1, memory_flush=flush), data_root=synth, verbose=False
    )
    ckpt = torch.load(res.final_checkpoint, map_location="cpu", weights_only=True)
    two = int(ckpt["memory"]["fill"].sum())  # sketches in the bank after epoch 2
    res1 = T.train(
        _cfg(tmp_path / "one", steps_per_epoch=1, epochs=1, memory_flush=flush),
        data_root=synth,
        verbose=False,
    )
    first = int(torch.load(res1.final_checkpoint, weights_only=True)["memory"]["fill"].sum())
    assert (two > first) is (flush == "never")
