"""Checks for notebook 00 (setup): which fidelity quirks are in force, and what a training step costs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dsn_lab.config import DSNConfig
from dsn_lab.exercises._check import (
    CheckResult,
    _named_values,
    _names,
    _result,
    _set_result,
    _unanswered,
)
from dsn_lab.step import dsn_step


def check_quirk_in_force(
    answer: Mapping[str, Any] | None,
    configs: Mapping[str, DSNConfig],
    name: str = "head_bias",
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 00.1: ``{config name: value of quirk name in force}``, against ``cfg.quirk(name)``."""
    ex = "00.1"
    if answer is None:
        return _unanswered(ex, "in_force", strict)
    got = _named_values(answer, list(configs), ex, "config name: value", strict)
    if isinstance(got, CheckResult):
        return got
    want = {k: cfg.quirk(name) for k, cfg in configs.items()}
    off = [f"{k}: {got[k]!r} (expected {want[k]!r})" for k in want if got[k] != want[k]]
    if off:
        hint = ""
        if any(got[k] == getattr(cfg, name) != want[k] for k, cfg in configs.items()):
            hint = f" That is the raw field: None follows faithful (QUIRKS['{name}'] = (released, fixed))."
        elif any(getattr(cfg, name) is not None and got[k] != want[k] for k, cfg in configs.items()):
            hint = " An explicit value wins over faithful."
        return _result(ex, "fail", "; ".join(off) + "." + hint, strict)
    return _result(ex, "pass", "; ".join(f"{k} {v!r}" for k, v in want.items()) + ".", strict)


class _CountingModel(nn.Module):
    """A stand-in network for :func:`images_per_step`: records how many images each forward pass gets."""

    def __init__(self, n_classes: int = 2, dim: int = 4) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dim))
        self.n_classes, self.seen = n_classes, 0

    def forward(self, x: Tensor, dom: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self.seen += len(x)
        h = x.flatten(1).mean(1, keepdim=True) + dom * self.w  # [N, dim], depends on the domain flag
        return h[:, : self.n_classes], h[:, : self.n_classes], h, h


def images_per_step(cfg: DSNConfig) -> int:
    """Images the student network processes in one training step of ``cfg``: :func:`dsn_step`'s forward
    pass, counted on a 1-pixel batch shaped as ``cfg``'s loader builds it (the teacher's pass not counted)."""
    s, p = cfg.sketches_per_batch, cfg.photos_per_batch
    img = {"sketch": torch.zeros(s, 3, 1, 1), "photo": torch.zeros(p, 3, 1, 1)}
    batch = {
        **img,
        "sketch_label": torch.arange(s) % 2,
        "photo_label": torch.arange(p) % 2,
        **{f"{k}_views": [img[k].clone() for _ in range(cfg.augment_views)] for k in img},
    }
    model = _CountingModel()
    dsn_step(model, batch, cfg.replace(use_kd=False, use_memory=False, contrastive_dim=None))
    return model.seen


def check_images_per_step(
    answer: Mapping[str, int] | None, configs: Mapping[str, DSNConfig], *, strict: bool | None = None
) -> CheckResult:
    """Exercise 00.2: ``{config name: images per training step}``, against :func:`images_per_step`."""
    ex = "00.2"
    if answer is None:
        return _unanswered(ex, "images", strict)
    got = _named_values(answer, list(configs), ex, "config name: images", strict)
    if isinstance(got, CheckResult):
        return got
    want = {k: images_per_step(cfg) for k, cfg in configs.items()}
    off = [f"{k}: {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
    if off:
        hints = []
        for k, cfg in configs.items():
            s_p = cfg.sketches_per_batch + cfg.photos_per_batch
            if got[k] == s_p * (1 + cfg.augment_views) != want[k]:
                hints.append(f"{k} trains without SupCon: its augmented views are not computed")
            elif got[k] in (s_p * cfg.augment_views, s_p) and got[k] != want[k]:
                hints.append(f"{k}: each image goes through once plain and augment_views times augmented")
        return _result(
            ex, "fail", "; ".join(off) + "." + (" " + "; ".join(hints) + "." if hints else ""), strict
        )
    return _result(
        ex, "pass", "; ".join(f"{k} {v}" for k, v in want.items()) + " (counted in dsn_step).", strict
    )


def _quirks_differ(a: DSNConfig, b: DSNConfig) -> set[str]:
    qa, qb = a.quirks(), b.quirks()
    return {k for k in qa if qa[k] != qb[k]}


def check_quirks_differ(
    answer: Iterable[str] | None, a: DSNConfig, b: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 00.3: the fidelity fields whose value *in force* differs between ``a`` and ``b``
    (``cfg.quirks()``), not the raw fields ``cfg.diff`` lists."""
    ex = "00.3"
    if answer is None:
        return _unanswered(ex, "behaviours", strict)
    got = _names(answer)
    if got is None:
        return _result(ex, "fail", "expected a set of field names.", strict)
    want, raw = _quirks_differ(a, b), set(a.diff(b))
    hint = (
        " Those are the raw fields (cfg.diff): compare what each run does, cfg.quirks()."
        if got == raw
        else ""
    )
    shown = f"{len(want)} behaviours differ, from {len(raw)} raw fields ({sorted(raw)})."
    return _set_result(ex, got, want, hint, shown, strict)
