"""One DSN training step, as in the released ``src/train_cse_resnet_*_ext.py`` (``train``), in one function.

:func:`dsn_losses` is the public form: the unweighted terms and the weighted total of one paired batch.
The training loop (``dsn_lab.train``), ``benchmarks/bench_method.py`` and the notebooks all call it, so
what they show is what trains. Routing, as released:

- one forward over ``[sketch, photo, sketch_v1, photo_v1, sketch_v2, photo_v2]`` with the domain column
  (0 sketch, 1 photo), so BatchNorm sees the whole batch;
- CE on the class logits of the un-augmented sketches and photos;
- SAKE distillation on the KD logits of the un-augmented images against the frozen teacher's logits on the
  same images, target ``softmax(kd_lambda * teacher + kdneg * cid_mask[label])``, averaged over the photos
  (the released call passes the domain flags as the mask; ``kd_domains="both"`` averages over all);
- SupCon on the L2-normalised hashing codes of the augmented views, sketches and photos together, positives
  by class (``contrastive_dim`` puts the model's projection head in between; released: none);
- the memory bank updated with the un-augmented pooled sketch features (the batch's photos as reference),
  then ``1 - cos(photo feature, sketch centre of its class)``; detached unless ``cfg.quirk("memory_grad")``.

Around the step, also here because they define it as released: its fixed inputs (:func:`step_inputs`: the
frozen teacher, the WordNet ``cid_mask`` and the memory bank), the optimiser with the backbone/head
parameter groups (:func:`make_optimizer`) and the lr schedule (:func:`lr_factor`). What stays in the
trainer: gradient accumulation, DDP (it joins through :class:`StepHooks`), the NaN stop and logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsn_lab.config import DSNConfig
from dsn_lab.inference import autocast
from dsn_lab.losses import SupConLoss, sake_kd_loss
from dsn_lab.memory import SketchMemory
from dsn_lab.model import build_teacher
from dsn_lab.semantics import cid_mask_for

TERMS = ("ce", "kd", "contrastive", "memory")


def _same(x: Tensor) -> Tensor:
    return x


@dataclass
class StepHooks:
    """How a distributed trainer joins the step; the defaults are one process.

    ``gather``: all ranks' rows in rank order, no gradient (memory update, SupCon labels).
    ``gather_keep_local``: the same, this rank's rows still in the graph (SupCon features).
    ``memory_weight``: ``f(loss, photo_labels) -> loss`` reweighting this rank's memory term so that the
    average over ranks is the mean over the global batch.
    """

    gather: Callable[[Tensor], Tensor] = _same
    gather_keep_local: Callable[[Tensor], Tensor] = _same
    memory_weight: Callable[[Tensor, Tensor], Tensor] | None = None


class StepOutput(NamedTuple):
    """``total`` (weighted by cfg), ``terms`` (unweighted), the un-augmented ``logits`` and ``labels``."""

    total: Tensor
    terms: dict[str, Tensor]
    logits: Tensor
    labels: Tensor


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _fp32(t: Tensor) -> Tensor:
    """Half-precision outputs of an autocast region in fp32; fp32/fp64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _projection(model: nn.Module) -> nn.Module:
    net = getattr(model, "module", model)  # DDP / DataParallel
    head = getattr(net, "projection", None)
    if head is None:
        raise ValueError(
            "dsn_losses: cfg.contrastive_dim is set but the model has no 'projection' head. Fix: build the "
            "model from the same config (dsn_lab.model.build_model), or set contrastive_dim=None (released)."
        )
    return head


def dsn_step(
    model: nn.Module,
    batch: dict[str, Any],
    cfg: DSNConfig,
    *,
    teacher: nn.Module | None = None,
    memory: Any = None,
    cid_mask: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
    hooks: StepHooks | None = None,
) -> StepOutput:
    """:func:`dsn_losses` with what a training loop needs: AMP, DDP hooks, and the logits for accuracy."""
    hooks = hooks or StepHooks()
    dev = _device_of(model)
    sk, ph = batch["sketch"].to(dev, non_blocking=True), batch["photo"].to(dev, non_blocking=True)
    ls, lp = batch["sketch_label"].to(dev).long(), batch["photo_label"].to(dev).long()
    s, n = sk.shape[0], sk.shape[0] + ph.shape[0]
    images = [sk, ph]
    if cfg.use_contrastive:  # the views only feed SupCon; without it they are not computed
        for a, b in zip(batch["sketch_views"], batch["photo_views"], strict=True):
            images += [a.to(dev, non_blocking=True), b.to(dev, non_blocking=True)]
    x = torch.cat(images)
    flag = {"device": dev, "dtype": sk.dtype if sk.is_floating_point() else torch.float32}
    dom_one = torch.cat([torch.zeros(s, **flag), torch.ones(n - s, **flag)])
    dom = dom_one.repeat(x.shape[0] // n)[:, None]
    labels = torch.cat([ls, lp])
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    use_kd = cfg.use_kd and cfg.w_kd != 0
    if use_kd and teacher is None:
        raise ValueError(
            "dsn_losses: use_kd is on but no teacher was given. Fix: pass teacher= (the frozen ImageNet "
            "model, dsn_lab.model.build_teacher) or set use_kd=False."
        )
    if cfg.use_memory and memory is None:
        raise ValueError(
            "dsn_losses: use_memory is on but no memory bank was given. Fix: pass memory= "
            "(dsn_lab.memory.SketchMemory) or set use_memory=False."
        )
    amp = autocast(dev, autocast_dtype)  # None: an explicitly disabled region (fp32)
    teacher_logits = None
    with amp:
        out = model(x, dom)
        if use_kd and not cfg.quirk("teacher_fp32"):
            with torch.no_grad():
                teacher_logits = teacher(x[:n], dom[:n])
    if use_kd and teacher_logits is None:  # released: the teacher in fp32, outside any autocast
        with torch.no_grad(), torch.autocast(device_type=dev.type, enabled=False):
            teacher_logits = teacher(_fp32(x[:n]), dom[:n])
    logits, kd_logits, code, feats = (_fp32(t) for t in (out[0], out[1], out[2], out[3]))

    terms: dict[str, Tensor] = {"ce": F.cross_entropy(logits[:n], labels)}
    if use_kd:
        mask = dom[:n] if cfg.kd_domains == "photo" else None
        rows = cid_mask[labels] if cid_mask is not None else None
        terms["kd"] = sake_kd_loss(kd_logits[:n], _fp32(teacher_logits), mask, rows, cfg.kd_lambda, cfg.kdneg)
    if cfg.use_contrastive:
        z = code[n:]
        if cfg.contrastive_dim is not None:
            with amp:
                z = _fp32(_projection(model)(z))
        z = torch.stack(F.normalize(z, dim=1).split(n), dim=1)  # [n, views, D]
        supcon = SupConLoss(temperature=cfg.temperature, base_temperature=0.07)
        terms["contrastive"] = supcon(hooks.gather_keep_local(z), hooks.gather(labels))
    if cfg.use_memory:
        memory.update(
            hooks.gather(feats[:s].detach()),
            hooks.gather(ls),
            hooks.gather(feats[s:n].detach()),
            hooks.gather(lp),
        )
        photo_feats = feats[s:n] if cfg.quirk("memory_grad") else feats[s:n].detach()
        terms["memory"] = memory.loss(photo_feats, lp)
        if hooks.memory_weight is not None:
            terms["memory"] = hooks.memory_weight(terms["memory"], lp)
    weights = {"ce": cfg.w_ce, "kd": cfg.w_kd, "contrastive": cfg.w_contrastive, "memory": cfg.w_memory}
    total = sum(weights[k] * v for k, v in terms.items())
    return StepOutput(total, terms, logits[:n], labels)


def dsn_losses(
    model: nn.Module,
    batch: dict[str, Any],
    cfg: DSNConfig,
    *,
    teacher: nn.Module | None = None,
    memory: Any = None,
    cid_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """The DSN losses of one paired batch: ``{"ce", "kd", "contrastive", "memory"}`` (those switched on,
    unweighted) and ``"total"`` (weighted by ``cfg.w_*``).

    ``batch``: the dict the paired loaders yield (``sketch`` [S, 3, H, W], ``photo`` [P, ...],
    ``sketch_label``, ``photo_label``, ``sketch_views`` / ``photo_views``: lists of augmented views).
    ``model``: any module whose ``forward(images, domain)`` returns (class logits, KD logits, hashing code,
    pooled feature) in that order, ``domain`` a float ``[N, 1]`` column of 0 (sketch) / 1 (photo) -- the
    released ``CSEResnetModel_KDHashing`` works as it is. ``teacher``: the frozen ImageNet model, same call
    (required when ``cfg.use_kd``; keep it in eval mode). ``memory``: a :class:`dsn_lab.memory.SketchMemory`
    (required when ``cfg.use_memory``; updated in place). ``cid_mask``: the ``[num_classes, 1000]`` WordNet
    table, indexed here by label; None gives plain distillation. No autocast: wrap the call in
    ``torch.autocast`` yourself, or use :func:`dsn_step`. The fidelity fields of ``cfg`` apply
    (``kd_domains``, ``contrastive_dim``, ``memory_grad``, ``teacher_fp32``).
    """
    res = dsn_step(model, batch, cfg, teacher=teacher, memory=memory, cid_mask=cid_mask)
    return {**res.terms, "total": res.total}


# ---------------------------------------------------------------------------------------------------
# around the step: its fixed inputs, the optimiser, the lr schedule
# ---------------------------------------------------------------------------------------------------
class StepInputs(NamedTuple):
    """What :func:`dsn_step` takes besides the model and the batch. ``use_kd``: whether KD is really on
    (False when the config asks for it but there is no teacher; ``note`` says why)."""

    teacher: nn.Module | None
    cid_mask: Tensor | None
    memory: SketchMemory | None
    use_kd: bool
    note: str


def step_inputs(cfg: DSNConfig, classes: Sequence[str], feature_dim: int, device: torch.device) -> StepInputs:
    """The frozen ImageNet teacher (eval mode, no gradient), the ``cid_mask`` table of ``classes`` (when
    ``kdneg != 0``) and the sketch memory bank (when ``use_memory``), on ``device``."""
    teacher, cid, note = None, None, ""
    use_kd = bool(cfg.use_kd and cfg.w_kd != 0 and cfg.teacher)
    if use_kd:
        teacher = build_teacher(cfg)
        if teacher is None:
            note = (
                f"no ImageNet teacher for backbone {cfg.backbone!r} (pretrained={cfg.pretrained}): "
                "the KD term is off for this run"
            )
            use_kd = False
        else:
            teacher = teacher.to(device).eval()
            if cfg.channels_last:
                teacher = teacher.to(memory_format=torch.channels_last)
            for p in teacher.parameters():
                p.requires_grad_(False)
    if use_kd and cfg.kdneg != 0:
        try:
            table = cid_mask_for(cfg.dataset, list(classes), faithful=cfg.faithful)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise RuntimeError(
                "The KD term needs the WordNet class/ImageNet similarity (cid_mask), which failed: "
                f"{exc}\n"
                "Or train without it: set kdneg=0 (plain distillation) or use_kd=False."
            ) from exc
        cid = torch.as_tensor(table, dtype=torch.float32, device=device)
    memory = None
    if cfg.use_memory:
        memory = SketchMemory(
            len(classes),
            cfg.memory_slots,
            feature_dim,
            faithful=cfg.quirk("memory_row_overwrite"),
            detach_loss=not cfg.quirk("memory_grad"),
        ).to(device)
    return StepInputs(teacher, cid, memory, use_kd, note)


def param_groups(model: nn.Module, cfg: DSNConfig) -> list[dict[str, Any]]:
    """Backbone and head parameter groups; the backbone's lr is ``lr * backbone_lr_mult``.

    The backbone is the model's ``backbone`` attribute when it has one, else parameters whose names start
    with "backbone."/"features."/"original_model."; everything else (hashing layer, classifier, KD head)
    is the head.
    """
    mult = float(getattr(cfg, "backbone_lr_mult", 1.0))
    body = getattr(model, "backbone", None)
    body_ids = {id(p) for p in body.parameters()} if isinstance(body, nn.Module) else set()
    backbone, head = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_body = id(p) in body_ids or (
            not body_ids and name.split(".")[0] in ("backbone", "features", "original_model")
        )
        (backbone if is_body else head).append(p)
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * mult, "lr_mult": mult, "name": "backbone"})
    if head:
        groups.append({"params": head, "lr": cfg.lr, "lr_mult": 1.0, "name": "head"})
    return groups


def make_optimizer(model: nn.Module, cfg: DSNConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` ("adam" as in the paper, "adamw", "sgd") over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    raise ValueError(f"Unknown optimizer {cfg.optimizer!r}: use 'adam' (paper), 'adamw' or 'sgd'.")


def lr_factor(
    cfg: DSNConfig, epoch: int, opt_step: int, total_steps: int, elapsed: float | None = None
) -> float:
    """Multiplier of the base lr.

    "exp" (released): ``lr_decay ** (epoch / epochs)``, constant within an epoch. "cosine": half a cosine
    over the run's optimiser steps; with ``max_train_seconds`` set (and ``lr_follows_time``, the default),
    progress is the larger of the step and the time fraction, so the schedule ends when the time budget
    does. "constant": 1.
    """
    if cfg.lr_schedule == "exp":
        return float(cfg.lr_decay ** (epoch / max(cfg.epochs, 1)))
    if cfg.lr_schedule == "cosine":
        progress = opt_step / max(total_steps, 1)
        if cfg.max_train_seconds and cfg.lr_follows_time and elapsed is not None:
            progress = max(progress, elapsed / cfg.max_train_seconds)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ValueError(
        f"Unknown lr_schedule {cfg.lr_schedule!r}: use 'exp' (released), 'cosine' or 'constant'."
    )
