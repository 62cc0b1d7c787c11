"""Checks for notebook 02 (model and losses): SupCon by hand, the memory loss, its slots and gradient."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dsn_lab.exercises._check import (
    CheckResult,
    _as_float,
    _close,
    _result,
    _unanswered,
)
from dsn_lab.losses import SupConLoss
from dsn_lab.memory import SketchMemory


def _supcon_variants(features: Tensor, labels: Tensor, temperature: float) -> dict[str, float]:
    """SupCon values of the usual slips, to recognise them: the anchor in its own denominator, the other
    view of the same image as the only positive (SimCLR), the T / 0.07 factor left out."""
    n, views = features.shape[:2]
    f = torch.cat(torch.unbind(features.float(), dim=1))  # view-major, as SupConLoss
    lab, idx = labels.reshape(-1).repeat(views), torch.arange(n).repeat(views)
    eye = torch.eye(len(f), dtype=torch.bool)
    logits = f @ f.T / temperature
    pos = (lab[:, None] == lab[None, :]) & ~eye

    def mean_loss(log_prob: Tensor, positives: Tensor, scale: float) -> float:
        k = positives.sum(1)
        per = -scale * torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / k.clamp(min=1)
        return float(per[k > 0].mean())

    own = logits - torch.logsumexp(logits.masked_fill(eye, -float("inf")), 1, keepdim=True)
    with_self = logits - torch.logsumexp(logits, 1, keepdim=True)
    same_image = (idx[:, None] == idx[None, :]) & ~eye
    return {
        "the anchor in its own denominator (leave a = i out of the sum)": mean_loss(
            with_self, pos, temperature / 0.07
        ),
        "only the other view of the same image as positive (SimCLR): every same-class view is one": (
            mean_loss(own, same_image, temperature / 0.07)
        ),
        "without the T / 0.07 factor in front": mean_loss(own, pos, 1.0),
    }


def check_supcon_by_hand(
    answer: float | None,
    features: Tensor,
    labels: Tensor,
    temperature: float,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 02.1: SupCon of ``features`` [N, views, D] (L2-normalised) at ``temperature`` by hand,
    against :class:`~dsn_lab.losses.SupConLoss` (``base_temperature`` 0.07, as in training); tolerance 1e-4
    relative."""
    ex = "02.1"
    if answer is None:
        return _unanswered(ex, "supcon_by_hand", strict)
    got = _as_float(answer)
    with torch.no_grad():
        want = float(SupConLoss(temperature, 0.07)(features, labels))
        slips = _supcon_variants(features.detach().cpu(), labels.detach().cpu(), temperature)
    if _close(got, want, 1e-4, 1e-6):
        return _result(
            ex, "pass", f"{got:.4f}, as SupConLoss({temperature:g}, base_temperature=0.07).", strict
        )
    hint = next((f" Looks like {what}." for what, v in slips.items() if _close(got, v, 1e-4, 1e-6)), "")
    return _result(ex, "fail", f"{got:.6g}, SupConLoss gives {want:.6g}.{hint}", strict)


def check_memory_loss(
    answer: float | None,
    bank: SketchMemory,
    photo_feats: Tensor,
    photo_labels: Tensor,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 02.2: the memory loss of ``photo_feats`` by hand, against ``bank.loss``; tolerance 1e-5."""
    ex = "02.2"
    if answer is None:
        return _unanswered(ex, "memory_loss_by_hand", strict)
    got = _as_float(answer)
    p, lp = photo_feats.detach().float().cpu(), photo_labels.detach().long().cpu()
    with torch.no_grad():
        want = float(bank.loss(photo_feats.detach(), photo_labels))
    n_in = int((bank.fill.cpu()[lp] > 0).sum())
    if _close(got, want, 1e-5, 1e-6):
        return _result(
            ex,
            "pass",
            f"{got:.4f} = bank.loss (over the {n_in} of {len(lp)} photos whose class has sketches).",
            strict,
        )
    slips: dict[str, float] = {}
    mem, fill = bank.memory.detach().float().cpu(), bank.fill.cpu()
    cos_centre, cos_slots = [], []
    for i in range(len(lp)):
        k = int(fill[lp[i]])
        if k == 0:
            cos_centre.append(0.0)
            continue
        slots = mem[lp[i], :k]
        cos_centre.append(float(F.cosine_similarity(p[i : i + 1], slots.mean(0, keepdim=True))))
        cos_slots.append(float(F.cosine_similarity(p[i : i + 1].expand_as(slots), slots).mean()))
    if n_in:
        slips["the mean cosine (the loss is 1 - that)"] = sum(cos_centre) / n_in
        slips["the photos of empty classes counted (leave them out of the mean)"] = 1 - sum(cos_centre) / len(
            lp
        )
        slips["the mean cosine to each slot (use the cosine to the centre, the mean of the slots)"] = 1 - sum(
            cos_slots
        ) / len(cos_slots)
    hint = next((f" Looks like {what}." for what, v in slips.items() if _close(got, v, 1e-5, 1e-6)), "")
    return _result(ex, "fail", f"{got:.6g}, bank.loss gives {want:.6g}.{hint}", strict)


def changed_cells(before: SketchMemory, after: SketchMemory) -> set[tuple[int, int]]:
    """The ``(class, slot)`` cells of ``memory`` whose content differs between two states of a bank."""
    diff = (before.memory != after.memory).any(dim=2).nonzero().tolist()
    return {(int(c), int(j)) for c, j in diff}


def replaced_cells(
    banks: Mapping[str, SketchMemory],
    sketch_feats: Tensor,
    sketch_labels: Tensor,
    photo_feats: Tensor,
    photo_labels: Tensor,
) -> dict[str, set[tuple[int, int]]]:
    """Per bank, the cells one ``update`` with these sketches and photos changes (on copies: the banks
    themselves stay as they are)."""
    out = {}
    for name, bank in banks.items():
        after = copy.deepcopy(bank)
        after.update(sketch_feats, sketch_labels, photo_feats, photo_labels)
        out[name] = changed_cells(bank, after)
    return out


def check_replaced_slots(
    answer: Mapping[str, Iterable[tuple[int, int]]] | None,
    banks: Mapping[str, SketchMemory],
    sketch_feats: Tensor,
    sketch_labels: Tensor,
    photo_feats: Tensor,
    photo_labels: Tensor,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 02.3: ``{bank name: {(class, slot), ...}}``, the cells of ``bank.memory`` one update
    changes, against running the update on a copy of each bank (exact)."""
    ex = "02.3"
    if answer is None:
        return _unanswered(ex, "changed", strict)
    if not isinstance(answer, Mapping) or set(answer) != set(banks):
        keys = sorted(answer) if isinstance(answer, Mapping) else type(answer).__name__
        return _result(ex, "fail", f"expected a dict with keys {sorted(banks)}, got {keys}.", strict)
    want = replaced_cells(banks, sketch_feats, sketch_labels, photo_feats, photo_labels)
    try:
        got = {k: {(int(c), int(j)) for c, j in v} for k, v in answer.items()}
    except (TypeError, ValueError):
        return _result(ex, "fail", "expected sets of (class, slot) pairs.", strict)
    off = [f"{k}: {sorted(got[k])}, the update changes {sorted(want[k])}" for k in banks if got[k] != want[k]]
    if off:
        hint = ""
        faithful = [k for k, b in banks.items() if b.faithful and got[k] != want[k]]
        fixed = [k for k, b in banks.items() if not b.faithful]
        if faithful and fixed and got[faithful[0]] == want[fixed[0]]:
            hint = (
                " The released rule writes memory[slot]: the whole row of the class *numbered* like the "
                "slot, every slot of it, filled or not."
            )
        elif fixed and got[fixed[0]] != want[fixed[0]]:
            hint = (
                " The slot replaced is the one least similar (cosine) to the class's mean photo in the batch."
            )
        return _result(ex, "fail", "; ".join(off) + "." + hint, strict)
    shown = "; ".join(f"{k} {sorted(v)}" for k, v in want.items())
    return _result(ex, "pass", f"{shown}.", strict)


def check_memory_gradient(
    answer: Mapping[str, Tensor] | None,
    banks: Mapping[str, SketchMemory],
    photo_feats: Tensor,
    photo_labels: Tensor,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 02.4: ``{bank name: gradient [N, D] of bank.loss w.r.t. the photo features}`` derived by
    hand, against autograd (zero where the loss does not require grad: the released, detached loss);
    tolerance 1e-5 absolute + 1e-4 relative."""
    ex = "02.4"
    if answer is None:
        return _unanswered(ex, "grads_by_hand", strict)
    if not isinstance(answer, Mapping) or set(answer) != set(banks):
        keys = sorted(answer) if isinstance(answer, Mapping) else type(answer).__name__
        return _result(ex, "fail", f"expected a dict with keys {sorted(banks)}, got {keys}.", strict)
    off, norms = [], []
    for name, bank in banks.items():
        f = photo_feats.detach().clone().float().requires_grad_(True)
        loss = bank.loss(f, photo_labels)
        want = torch.autograd.grad(loss, f)[0] if loss.requires_grad else torch.zeros_like(f)
        got = torch.as_tensor(answer[name], dtype=torch.float32).detach().cpu()
        if got.shape != want.shape:
            off.append(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)} (one row per photo)")
            continue
        norms.append(f"{name} {want.norm():.4f}")
        if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            continue
        what = f"{name}: |yours - autograd| = {(got - want).norm():.4g} (autograd norm {want.norm():.4g})"
        if not want.any():
            what += ". This loss is computed on detached features (bank.detach_loss): no gradient at all"
        elif torch.allclose(got, -want, rtol=1e-4, atol=1e-5):
            what += ". The sign is flipped: the loss is 1 - cos"
        else:
            k = int((bank.fill.cpu()[photo_labels.cpu().long()] > 0).sum())
            if k > 1 and torch.allclose(got, want * k, rtol=1e-4, atol=1e-5):
                what += (
                    f". Off by the factor {k}: the loss is a mean over the photos whose class has sketches"
                )
        off.append(what)
    if off:
        return _result(ex, "fail", "; ".join(off) + ".", strict)
    return _result(ex, "pass", f"as autograd; gradient norms {', '.join(norms)}.", strict)
