"""Checks for notebook 03 (training): the logged loss terms, the SupCon temperature and the LR schedule.

:func:`load_run_and_batch` and :func:`supcon_inputs` give the exercises their inputs as training builds them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsn_lab.checkpoint import load_trained_model
from dsn_lab.config import DSNConfig
from dsn_lab.data.batching import paired_loader_from_config
from dsn_lab.exercises._check import (
    CheckResult,
    _as_float,
    _close,
    _floats,
    _result,
    _unanswered,
)
from dsn_lab.losses import SupConLoss
from dsn_lab.selection import training_sets
from dsn_lab.step import TERMS, dsn_losses, lr_factor


def load_run_and_batch(
    checkpoint: str | os.PathLike[str],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, DSNConfig, dict[str, Any]]:
    """(trained model in eval mode, its config, one training batch built as the trainer builds them), from
    the run's data (``cfg.data_root``, or ``data_root`` when given)."""
    model, cfg, _ = load_trained_model(checkpoint, device)
    root = data_root if data_root is not None else cfg.data_root
    data = training_sets(cfg, Path(root) if root else None, verbose=False)
    loader = paired_loader_from_config(cfg, data["sketch"], data["photo"], seed=seed)
    return model, cfg, next(iter(loader))


def _ce_only(cfg: DSNConfig) -> DSNConfig:
    return cfg.replace(use_kd=False, use_memory=False, use_contrastive=False)


def _in_eval(model: nn.Module, fn: Any) -> Any:
    was = model.training
    model.eval()  # BatchNorm on running statistics: the value does not depend on what else is in the batch
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was)


def check_logged_total(
    answer: float | None, row: Mapping[str, Any], cfg: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.1: the total of a logged step row from its ``loss_<term>`` columns and ``cfg.w_<term>``,
    against the ``loss`` train logged; tolerance 1e-4 relative (the log holds float32 means)."""
    ex = "03.1"
    if answer is None:
        return _unanswered(ex, "total_by_hand", strict)
    logged = float(row["loss"])
    present = [k for k in TERMS if f"loss_{k}" in row]
    got = _as_float(answer)
    if _close(got, logged, 1e-4, 1e-6):
        weights = ", ".join(f"{getattr(cfg, f'w_{k}'):g} × {k}" for k in present)
        return _result(ex, "pass", f"{got:.4f} = {weights}, as train logged ({logged:.4f}).", strict)
    plain = sum(float(row[f"loss_{k}"]) for k in present)
    hint = ""
    if _close(got, plain, 1e-4, 1e-6):
        hint = " That is the unweighted sum: weight each term by cfg.w_<term>."
    return _result(ex, "fail", f"{got:.6g}, but train logged {logged:.6g} (terms: {present}).{hint}", strict)


def check_ce_term(
    answer: Any, model: nn.Module, batch: Mapping[str, Any], cfg: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.2: CE over the un-augmented sketches and photos by hand, against ``dsn_losses(...)["ce"]``
    (model in eval mode); tolerance 1e-4 absolute + 1e-4 relative."""
    ex = "03.2"
    if answer is None:
        return _unanswered(ex, "ce_by_hand", strict)
    got = _as_float(answer)
    want = _as_float(_in_eval(model, lambda: dsn_losses(model, dict(batch), _ce_only(cfg))["ce"]))
    if _close(got, want, 1e-4, 1e-4):
        return _result(ex, "pass", f"{got:.4f}, the CE term of dsn_losses ({want:.4f}).", strict)
    hints = _in_eval(model, lambda: _ce_slips(model, batch))
    hint = next((f" Looks like {what}." for what, v in hints.items() if _close(got, v, 1e-4, 1e-4)), "")
    return _result(ex, "fail", f"{got:.6g}, dsn_losses gives {want:.6g}.{hint}", strict)


def _ce_slips(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
    """CE values of the usual mistakes: one domain only, or the domain flags swapped."""
    dev = next(model.parameters()).device
    sk, ph = batch["sketch"].to(dev), batch["photo"].to(dev)
    ls, lp = batch["sketch_label"].to(dev), batch["photo_label"].to(dev)
    s, p = len(sk), len(ph)
    x, y = torch.cat([sk, ph]), torch.cat([ls, lp])
    dom = torch.cat([torch.zeros(s), torch.ones(p)]).to(dev)[:, None]
    swapped = F.cross_entropy(model(x, 1 - dom)[0], y)
    return {
        "the sketches only (add the photos)": float(F.cross_entropy(model(sk, dom[:s])[0], ls)),
        "the photos only (add the sketches)": float(F.cross_entropy(model(ph, dom[s:])[0], lp)),
        "the domain flags swapped (0 is sketch, 1 is photo)": float(swapped),
    }


def supcon_inputs(model: nn.Module, batch: Mapping[str, Any], cfg: DSNConfig) -> tuple[Tensor, Tensor]:
    """(features ``[N, views, D]``, labels ``[N]``) that SupCon sees in :func:`dsn_lab.step.dsn_step`: the
    L2-normalised hashing codes of the augmented views, sketches and photos together (eval, no gradient)."""

    def run() -> tuple[Tensor, Tensor]:
        dev = next(model.parameters()).device
        s, p = len(batch["sketch"]), len(batch["photo"])
        dom = torch.cat([torch.zeros(s), torch.ones(p)]).to(dev)[:, None]
        codes = []
        for sk, ph in zip(batch["sketch_views"], batch["photo_views"], strict=True):
            z = model(torch.cat([sk, ph]).to(dev), dom)[2]
            if cfg.contrastive_dim is not None:
                z = getattr(model, "module", model).projection(z)
            codes.append(F.normalize(z.float(), dim=1))
        labels = torch.cat([batch["sketch_label"], batch["photo_label"]]).to(dev)
        return torch.stack(codes, dim=1), labels

    return _in_eval(model, run)


def check_temperature_sweep(
    answer: Sequence[float] | None,
    features: Tensor,
    labels: Tensor,
    temperatures: Sequence[float],
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 03.3: one SupCon value per temperature (``base_temperature`` 0.07, as in training), against
    :class:`~dsn_lab.losses.SupConLoss`; tolerance 1e-4 relative."""
    ex = "03.3"
    if answer is None:
        return _unanswered(ex, "sweep", strict)
    got = _floats(answer)
    if got is None or len(got) != len(temperatures):
        n = "?" if got is None else len(got)
        return _result(
            ex, "fail", f"expected {len(temperatures)} numbers (one per temperature), got {n}.", strict
        )
    with torch.no_grad():
        want = [float(SupConLoss(t, 0.07)(features, labels)) for t in temperatures]
        plain = [float(SupConLoss(t, t)(features, labels)) for t in temperatures]
    off = [
        f"T={t}: {g:.4g} vs {w:.4g}"
        for t, g, w in zip(temperatures, got, want)
        if not _close(g, w, 1e-4, 1e-6)
    ]
    if off:
        hint = ""
        if all(_close(g, w, 1e-4, 1e-6) for g, w in zip(got, plain)):
            hint = " These are with base_temperature = T: keep base_temperature=0.07 (the T/0.07 factor)."
        return _result(ex, "fail", f"{len(off)} values off: {'; '.join(off[:3])}.{hint}", strict)
    best = temperatures[min(range(len(want)), key=want.__getitem__)]
    return _result(
        ex,
        "pass",
        f"all {len(want)} values match SupConLoss (lowest at T={best}, training uses 0.07).",
        strict,
    )


def check_lr_schedule(
    answer: Sequence[float] | None, cfg: DSNConfig, total_steps: int, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.4: the lr multiplier at optimiser steps ``0 .. total_steps`` (step progress only, no time
    budget), against :func:`dsn_lab.step.lr_factor`; tolerance 1e-6 absolute."""
    ex = "03.4"
    if answer is None:
        return _unanswered(ex, "lr_by_hand", strict)
    got = _floats(answer)
    want = [lr_factor(cfg, 0, k, total_steps) for k in range(total_steps + 1)]
    if got is None or len(got) != len(want):
        n = "?" if got is None else len(got)
        return _result(ex, "fail", f"expected {len(want)} values (steps 0..{total_steps}), got {n}.", strict)
    off = [k for k, (g, w) in enumerate(zip(got, want)) if not _close(g, w, 0.0, 1e-6)]
    if off:
        k = off[0]
        hint = ""
        if all(_close(g, w * cfg.lr, 1e-6, 1e-12) for g, w in zip(got, want)):
            hint = " Those are learning rates: give the multiplier (divide by cfg.lr)."
        return _result(
            ex,
            "fail",
            f"{len(off)} steps off, first at step {k}: {got[k]:.6g} vs {want[k]:.6g}.{hint}",
            strict,
        )
    return _result(
        ex,
        "pass",
        f"{len(want)} values match lr_factor ({cfg.lr_schedule}: {want[0]:.2f} at step 0, "
        f"{want[len(want) // 2]:.2f} half-way, {want[-1]:.2f} at the end).",
        strict,
    )
