"""The DSN training objective: cross-entropy, SAKE distillation, SupCon, and the memory term.

DSN (released ``haowang1992/DSN``, ``src/train_cse_resnet_sketchy_ext.py``) minimises

    w_ce * CE + w_kd * SAKE-KD + w_contrastive * SupCon + w_memory * memory

with weights 1.0 / 1.0 / 0.1 / 1.0. CE and KD see the un-augmented sketches and photos; SupCon sees the
L2-normalised hashing codes of the two augmented views; the memory term comes from
:class:`dsn_lab.memory.SketchMemory`. :class:`DSNObjective` puts them together from a :class:`DSNConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from dsn_lab.config import DSNConfig


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al., 2020), "all" anchors mode, as used by DSN.

    ``forward(features [N, n_views, D], labels [N])``; features are expected L2-normalised. Every one of the
    ``N * n_views`` views is an anchor; its positives are the other views with the same label, its
    denominator all other views. The loss of an anchor is
    ``-(T / T_base) * mean over positives of log softmax``; the result is the mean over anchors.

    Where every anchor has a positive, this is the value of the released code (``src/tool.py``). The released
    code divides by the positive count, so an anchor *without* a positive (a class with one sample and one
    view) gives NaN there; here such anchors are left out of the mean, and if no anchor has a positive the
    loss is 0, still attached to the graph (zero gradient) so ``backward()`` works. An empty batch (N = 0)
    also gives that 0. No ``.item()``: safe inside a compiled / asynchronous GPU step.
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(f"SupConLoss: temperatures must be > 0, got {temperature}, {base_temperature}.")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if features.dim() < 3:
            raise ValueError(
                f"SupConLoss: features must be [N, n_views, D], got shape {tuple(features.shape)}; "
                "stack the views with torch.stack([v1, v2], dim=1)."
            )
        n, views = features.shape[0], features.shape[1]
        labels = labels.reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(
                f"SupConLoss: {labels.shape[0]} labels for {n} samples; pass one label per sample."
            )
        if n * views < 2:  # nothing to contrast with: no anchor has a positive
            return features.sum() * 0.0
        # view-major order, as released: [view0 of all samples, view1 of all samples, ...]
        feats = torch.cat(torch.unbind(features.reshape(n, views, -1), dim=1), dim=0)
        lab = labels.repeat(views)
        m = feats.shape[0]
        logits = feats @ feats.T / self.temperature
        logits = logits - logits.amax(dim=1, keepdim=True).detach()  # stability only; value unchanged
        self_mask = torch.eye(m, dtype=torch.bool, device=feats.device)
        log_norm = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - log_norm
        pos = (lab[:, None] == lab[None, :]) & ~self_mask
        n_pos = pos.sum(1)
        mean_log_prob_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
        per_anchor = -(self.temperature / self.base_temperature) * mean_log_prob_pos
        has_pos = (n_pos > 0).to(per_anchor.dtype)
        return (per_anchor * has_pos).sum() / has_pos.sum().clamp(min=1.0)


def _domain_mask(domain: Tensor | int | None, n: int, like: Tensor) -> Tensor | None:
    if domain is None:
        return None
    if isinstance(domain, int | float | bool):
        return torch.full((n, 1), float(domain), dtype=like.dtype, device=like.device)
    flag = domain.reshape(-1)
    if flag.shape[0] != n:
        raise ValueError(
            f"sake_kd_loss: domain has {flag.shape[0]} entries for {n} samples; pass one flag per sample "
            "(0 sketch, 1 photo), shape [N] or [N, 1]."
        )
    return flag.to(device=like.device, dtype=like.dtype)[:, None]


def soft_cross_entropy(
    input_logits: Tensor, target_logits: Tensor, mask: Tensor | None = None, mask_pos: Tensor | None = None
) -> Tensor:
    """SAKE's ``SoftCrossEntropy``.

    ``sum(-log_softmax(input) * softmax(target + mask_pos) * mask) / sum(mask)``.

    ``mask`` is [N, 1] (the domain flag in DSN, so only photos count); without it, the sum is divided by N.
    Released behaviour kept: the normaliser is the mask's sum, i.e. the loss is a mean over masked rows.
    One deviation: an all-zero mask gives 0 (attached, zero gradient) instead of the released 0/0 = NaN.
    """
    log_likelihood = -F.log_softmax(input_logits, dim=1)
    if mask_pos is not None:
        target_logits = target_logits + mask_pos
    weighted = log_likelihood * F.softmax(target_logits, dim=1)
    if mask is None:
        return weighted.sum() / input_logits.shape[0]
    return (weighted * mask).sum() / mask.sum().clamp(min=1.0)


class SoftCrossEntropy(nn.Module):
    """Module form of :func:`soft_cross_entropy` (same call signature as the released class)."""

    def forward(
        self,
        input_logits: Tensor,
        target_logits: Tensor,
        mask: Tensor | None = None,
        mask_pos: Tensor | None = None,
    ) -> Tensor:
        return soft_cross_entropy(input_logits, target_logits, mask, mask_pos)


def sake_kd_loss(
    student_kd_logits: Tensor,
    teacher_logits: Tensor,
    domain: Tensor | int | None,
    cid_mask: Tensor | None,
    kd_lambda: float = 1.0,
    kdneg: float = 0.3,
) -> Tensor:
    """SAKE's semantic-aware distillation, exactly as DSN calls it.

    Target distribution ``softmax(kd_lambda * teacher_logits + kdneg * cid_mask)``; loss the soft
    cross-entropy of the student's ImageNet head against it, summed over the rows whose ``domain`` flag is 1
    (photos) and divided by the number of photos — the released call passes the domain flags as the mask.
    ``cid_mask``: per-sample rows [N, 1000] (index the [C, 1000] table of ``dsn_lab.semantics`` by the
    labels), or None for plain distillation. ``domain=None`` averages over all N samples (released
    ``validate``). The target is detached: the teacher is frozen and ``cid_mask`` is constant.
    """
    if student_kd_logits.shape != teacher_logits.shape or student_kd_logits.dim() != 2:
        raise ValueError(
            f"sake_kd_loss: student {tuple(student_kd_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} "
            "logits must both be [N, 1000]."
        )
    n = student_kd_logits.shape[0]
    target = kd_lambda * teacher_logits.detach().to(student_kd_logits.dtype)
    mask_pos = None
    if cid_mask is not None:
        if cid_mask.shape != student_kd_logits.shape:
            raise ValueError(
                f"sake_kd_loss: cid_mask must have one row per sample, shape "
                f"{tuple(student_kd_logits.shape)}, "
                f"got {tuple(cid_mask.shape)}; index the class table by the labels: table[labels]."
            )
        mask_pos = kdneg * cid_mask.detach().to(device=target.device, dtype=target.dtype)
    mask = _domain_mask(domain, n, student_kd_logits)
    return soft_cross_entropy(student_kd_logits, target, mask, mask_pos)


class LossOutput(NamedTuple):
    """``total``: the weighted sum to back-propagate; ``terms``: each *unweighted* term, for logging."""

    total: Tensor
    terms: dict[str, Tensor]


class DSNObjective(nn.Module):
    """The DSN loss with the config's weights (``w_*``) and on/off switches (``use_*``) for ablations.

    ``forward(*, logits, labels, ...)`` returns :class:`LossOutput`. CE is always on. A switched-on term
    whose inputs are missing raises (no silent ablation); a switched-off term is not computed and is absent
    from ``terms``. ``contrastive_labels`` defaults to ``labels``. ``memory_loss`` is the scalar from
    ``SketchMemory.loss``. The SupCon base temperature stays 0.07 as in the released code (it passes only
    ``--temperature``), so a different ``cfg.temperature`` also rescales the term by ``T / 0.07``.
    """

    def __init__(self, cfg: DSNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.supcon = SupConLoss(temperature=cfg.temperature, base_temperature=0.07)

    def forward(
        self,
        *,
        logits: Tensor,
        labels: Tensor,
        kd_logits: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        domain: Tensor | int | None = None,
        cid_mask: Tensor | None = None,
        contrastive_features: Tensor | None = None,
        contrastive_labels: Tensor | None = None,
        memory_loss: Tensor | None = None,
    ) -> LossOutput:
        cfg = self.cfg
        terms: dict[str, Tensor] = {"ce": F.cross_entropy(logits, labels)}
        total = cfg.w_ce * terms["ce"]
        if cfg.use_kd:
            if kd_logits is None or teacher_logits is None:
                raise ValueError(
                    "DSNObjective: use_kd is on but kd_logits/teacher_logits were not given; pass the "
                    "student's "
                    "KD logits and the frozen teacher's logits, or set use_kd=False in the config."
                )
            terms["kd"] = sake_kd_loss(kd_logits, teacher_logits, domain, cid_mask, cfg.kd_lambda, cfg.kdneg)
            total = total + cfg.w_kd * terms["kd"]
        if cfg.use_contrastive:
            if contrastive_features is None:
                raise ValueError(
                    "DSNObjective: use_contrastive is on but contrastive_features ([N, 2, D], L2-normalised "
                    "codes of the augmented views) were not given; pass them or set use_contrastive=False."
                )
            c_labels = labels if contrastive_labels is None else contrastive_labels
            terms["contrastive"] = self.supcon(contrastive_features, c_labels)
            total = total + cfg.w_contrastive * terms["contrastive"]
        if cfg.use_memory:
            if memory_loss is None:
                raise ValueError(
                    "DSNObjective: use_memory is on but memory_loss was not given; pass "
                    "SketchMemory.loss(photo_feats, photo_labels) or set use_memory=False."
                )
            terms["memory"] = memory_loss
            total = total + cfg.w_memory * memory_loss
        return LossOutput(total, terms)
