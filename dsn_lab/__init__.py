"""dsn-lab: the Domain-Smoothing Network (DSN, IJCAI 2021) for zero-shot sketch-based image retrieval.

Submodules are imported lazily (``import dsn_lab`` does not import torch); the public API:

- ``dsn_lab.config``: :class:`DSNConfig`, :data:`PRESETS`, :func:`get_preset`
- ``dsn_lab.metrics``: :func:`evaluate_retrieval`
- ``dsn_lab.model``: :func:`cse_resnet50_dsn`, :func:`build_model`, :func:`build_teacher`
- ``dsn_lab.losses``: :class:`SupConLoss`, the SAKE KD loss, :class:`DSNObjective`
- ``dsn_lab.memory``: :class:`SketchMemory`
- ``dsn_lab.step``: :func:`dsn_losses`, one DSN training step as released
- ``dsn_lab.data``: :func:`get_dataset` and the dataset fetchers
- ``dsn_lab.analysis``: :func:`domain_gap`
- ``dsn_lab.colab``: :func:`setup`, the folders a notebook uses (Google Drive on Colab)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "analysis",
    "checkpoint",
    "cli",
    "colab",
    "config",
    "course",
    "data",
    "distributed",
    "embed",
    "inference",
    "losses",
    "memory",
    "metrics",
    "model",
    "plots",
    "selection",
    "semantics",
    "step",
    "train",
    "weights",
    "widgets",
)
_EXPORTS = {
    "DSNConfig": "config",
    "PRESETS": "config",
    "get_preset": "config",
    "evaluate_retrieval": "metrics",
    "cse_resnet50_dsn": "model",
    "build_model": "model",
    "build_teacher": "model",
    "SupConLoss": "losses",
    "DSNObjective": "losses",
    "SketchMemory": "memory",
    "dsn_losses": "step",
    "get_dataset": "data",
    "domain_gap": "analysis",
}

__all__ = sorted(set(_SUBMODULES) | set(_EXPORTS) | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"dsn_lab.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"dsn_lab.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dsn_lab' has no attribute {name!r}")
