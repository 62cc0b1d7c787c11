"""Checkpoints of a DSN run: the file format, safe loading, resume checks, RNG state, the trained model.

A checkpoint (``<output_dir>/last.pt`` every epoch and every ``checkpoint_every`` optimiser steps,
``best.pt`` at the best validation score) holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)`` and never runs code: model, optimiser, GradScaler, memory bank, RNG states
(torch, CUDA, numpy, python), data position (epoch and batch within it), best score, the config as JSON, the
history and the environment record. :func:`training_payload` writes that layout and
:func:`restore_training_state` reads it back, so the format lives in this module only. Writes are atomic
(temp file, fsync, ``os.replace``): a process killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import io
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dsn_lab._atomic import atomic_write_bytes
from dsn_lab.config import DSNConfig
from dsn_lab.model import build_model

CHECKPOINT_FORMAT = "dsn_lab.checkpoint"
CHECKPOINT_VERSION = 1
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
#: Fields that may differ between a checkpoint and the config that resumes it (they change no result).
RESUME_IGNORED_FIELDS = (
    "output_dir",
    "data_root",
    "num_workers",
    "log_every",
    "checkpoint_every",
    "max_train_seconds",
    "notes",
    "preset",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not ours, or from another config."""


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` atomically (temp file in the same folder, fsync, ``os.replace``).

    A process killed mid-write leaves the previous file intact (and at worst a ``.last.pt.tmp-*`` file,
    removed on the next start).
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue(), suffix="")
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a dsn_lab checkpoint safely (``weights_only=True``), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} not found. Fix: pass the path of a last.pt / best.pt written by "
            "dsn_lab.train (its output_dir)."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"Cannot load checkpoint {path}: it is empty (0 bytes): truncated or corrupted, e.g. by an "
            "interrupted copy. Fix: use another checkpoint (best.pt, or an earlier copy), or delete it and "
            "train again."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            why = (
                "it contains Python objects other than tensors and plain containers, so it was refused "
                "(dsn_lab loads with weights_only=True and never runs code from a checkpoint)"
            )
        else:
            first_line = (text.splitlines() or ["no message"])[0][:200]
            why = f"it is truncated or corrupted ({type(exc).__name__}: {first_line})"
        raise CheckpointError(
            f"Cannot load checkpoint {path}: {why}. Fix: use another checkpoint (best.pt, or an earlier "
            "copy), or delete it and train again."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a dsn_lab checkpoint (no 'format': {CHECKPOINT_FORMAT!r} entry). Fix: pass a "
            "last.pt / best.pt written by dsn_lab.train; released DSN checkpoints need converting first."
        )
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer dsn_lab (checkpoint version {ckpt.get('version')}, this one "
            f"reads {CHECKPOINT_VERSION}). Fix: upgrade dsn_lab."
        )
    return ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> DSNConfig:
    """The :class:`DSNConfig` stored in a checkpoint."""
    return DSNConfig.from_dict(json.loads(ckpt["config"]))


def check_resume_config(cfg: DSNConfig, saved: DSNConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` naming every field that differs (except the harmless ones)."""
    diff = cfg.diff(saved, ignore=RESUME_IGNORED_FIELDS)
    if diff:
        lines = "\n".join(f"  {k}: this run {a!r}, checkpoint {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(
            f"Checkpoint {path} was written with another config; differing fields:\n{lines}\n"
            "Fix: resume with the checkpoint's settings (e.g. --set "
            + " ".join(f"{k}={json.dumps(b)}" for k, (_, b) in sorted(diff.items()))
            + "), or use another output_dir to start a new run."
        )


# ---------------------------------------------------------------------------------------------------
# RNG state (tensors and plain containers only, so it rides in a weights_only checkpoint)
# ---------------------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and python RNG states of this process."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only on the same number of devices)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# ---------------------------------------------------------------------------------------------------
# the training state
# ---------------------------------------------------------------------------------------------------
def training_payload(
    cfg: DSNConfig,
    *,
    classes: list[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    memory: nn.Module | None,
    position: dict[str, Any],
    best: dict[str, Any],
    history: list[dict[str, Any]],
    stopped: str,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """Everything a resumed run needs, as tensors and plain containers (see the module docstring).

    ``position``: epoch, batch (within it), opt_step, batches_seen, elapsed, finished. ``best``: metric,
    epoch, name of the selection score.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_json(),
        "backbone": cfg.backbone,
        "classes": list(classes),
        "num_classes": len(classes),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "memory": memory.state_dict() if memory is not None else {},
        "rng": rng_state(),
        "position": dict(position),
        "best": dict(best),
        "history": json.dumps(history, default=float),
        "stopped": stopped,
        "environment": json.dumps(environment),
    }


def restore_training_state(
    ckpt: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    memory: nn.Module | None,
) -> None:
    """Load the weights, optimiser, scaler and memory bank of ``ckpt`` in place (the RNG state is restored
    by the loop, at the point of the data position)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    if memory is not None and ckpt.get("memory"):
        memory.load_state_dict(ckpt["memory"])


def load_trained_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, DSNConfig, dict[str, Any]]:
    """(model in eval mode, its config, the checkpoint dict) from a dsn_lab checkpoint.

    The model is built without downloading pretrained weights (they are overwritten by the checkpoint).
    """
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg.replace(pretrained=False), int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit a {cfg.backbone} model with {ckpt['num_classes']} classes and "
            f"hashing_dim {cfg.hashing_dim}: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), cfg, ckpt
