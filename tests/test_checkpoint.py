"""Checkpoints (dsn_lab.checkpoint): safe loading, resume checks, RNG state, the training state, the model.

Bad files (truncated, foreign, malicious, from another config) are end-to-end fault scenarios with their
one home in tests/test_faults.py, whose docstrings make the README's "Failure modes" table.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from looplib import loop_cfg as _cfg
from looplib import state_equal as _state_equal

from dsn_lab.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_resume_config,
    load_checkpoint,
    load_trained_model,
    restore_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    training_payload,
)
from dsn_lab.config import get_preset
from dsn_lab.memory import SketchMemory
from dsn_lab.train import train


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.randn(3), np.random.rand(), random.random()  # move every generator off its seed
    path = save_checkpoint({"format": CHECKPOINT_FORMAT, "version": 1, "rng": rng_state()}, tmp_path / "r.pt")
    want = (torch.randn(4), np.random.rand(4), [random.random() for _ in range(4)])
    set_rng_state(load_checkpoint(path)["rng"])
    got = (torch.randn(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_training_state_round_trip(tmp_path: Path) -> None:
    cfg = get_preset("cpu-quick")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    memory = SketchMemory(3, 2, 4)
    memory.update(torch.randn(2, 4), torch.tensor([0, 2]), torch.randn(2, 4), torch.tensor([0, 2]))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    payload = training_payload(
        cfg,
        classes=["a", "b", "c"],
        model=model,
        optimizer=opt,
        scaler=scaler,
        memory=memory,
        position={
            "epoch": 1,
            "batch": 2,
            "opt_step": 5,
            "batches_seen": 5,
            "elapsed": 1.5,
            "finished": False,
        },
        best={"metric": 0.25, "epoch": 1, "name": "val_mAP@all"},
        history=[{"kind": "step", "loss": 1.0}],
        stopped="completed",
        environment={"python": "3"},
    )
    ckpt = load_checkpoint(save_checkpoint(payload, tmp_path / "last.pt"))  # weights_only: plain data only
    assert ckpt["num_classes"] == 3 and ckpt["position"]["opt_step"] == 5 and ckpt["best"]["metric"] == 0.25
    model2 = torch.nn.Linear(4, 3)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    memory2 = SketchMemory(3, 2, 4)
    restore_training_state(ckpt, model=model2, optimizer=opt2, scaler=scaler, memory=memory2)
    assert _state_equal(model2.state_dict(), model.state_dict())
    assert _state_equal(memory2.state_dict(), memory.state_dict()) and int(memory.fill.sum()) > 0
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_check_resume_config_names_fields_and_ignores_harmless_ones(tmp_path: Path) -> None:
    saved = get_preset("cpu-quick")
    check_resume_config(saved.replace(output_dir="elsewhere", log_every=7), saved, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"(?s)lr: this run 0\.5, checkpoint 0\.0001.*--set lr=0\.0001"):
        check_resume_config(saved.replace(lr=0.5), saved, tmp_path / "last.pt")


def test_load_trained_model_matches_checkpoint(synth: Path, tmp_path: Path) -> None:
    res = train(_cfg(tmp_path / "run", epochs=1, steps_per_epoch=1), data_root=synth, verbose=False)
    model, cfg, ckpt = load_trained_model(res.final_checkpoint)
    assert not model.training and cfg.hashing_dim == 16 and ckpt["classes"] == res.classes
    assert _state_equal(model.state_dict(), ckpt["model"])
