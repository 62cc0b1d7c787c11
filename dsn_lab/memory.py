"""The category-specific sketch memory bank of DSN, as released ("faithful") and corrected ("fixed").

DSN keeps, per seen class, up to ``slots`` (``--topk``, 10) pooled 2048-d *sketch* features and pulls each
photo feature towards the mean of its class's entries: ``loss = 1 - mean cos(photo, sketch centre)``.
The bank is emptied at the start of every epoch (``flush``).

Released rule (``haowang1992/DSN``, ``src/tool.py``, ``MemoryStore``), applied to the sketches of a batch
one at a time, in batch order:

1. while class ``c`` has a free slot, the sketch goes into the next free slot (``memory[c, fill[c]]``);
2. once the class is full, the mean photo feature ``q`` of class ``c`` *in this batch* is the reference:
   the stored entry least similar to ``q`` (cosine) is replaced when the new sketch is more similar to ``q``
   than it (strictly). A class without photos in the batch gets nothing (the released code takes the mean of
   an empty selection, a NaN vector, and every comparison with NaN is false).

Two defects of the released code, both reproduced by ``faithful=True``:

- the replacement is written to ``memory[slot_index]``, i.e. to the *whole row of class number
  slot_index*, not to ``memory[c, slot_index]``; the fill count of that class is left unchanged;
- the loss is computed on detached features, so it adds a constant to the total loss and no gradient.

``faithful=False`` (the default) writes ``memory[c, slot]``, lets the loss pass gradient to the photo
features (the bank itself is always detached: sketches are targets, not inputs), and does the update with a
fixed number of tensor operations — no per-sample Python loop, no ``.item()``, no boolean indexing — so it
never waits for the GPU. Its result is what the corrected sequential rule would produce: with a fixed
reference ``q`` per class, "replace the least similar entry if the newcomer is more similar" keeps exactly
the ``slots`` candidates (old entries and this batch's sketches) most similar to ``q``, ties going to the
earlier one; that set is computed at once. Only slot *positions* of the replacements may differ from a
sequential run, which nothing depends on. Filled slots are always the first ``fill[c]`` ones, in both modes.

The class centre is the mean of the filled slots (as released, ``get_class_center``); the fixed mode keeps
it in a ``centres`` buffer, recomputed exactly (not incrementally) for the classes each update touches, and
keeps each slot's L2 norm in ``norms``, so neither the update nor the loss reads the whole bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-8


def _check_pair(feats: Tensor, labels: Tensor, dim: int, what: str) -> None:
    if feats.dim() != 2 or feats.shape[1] != dim:
        raise ValueError(
            f"dsn_lab.memory.SketchMemory: expected {what} features of shape [N, {dim}], got "
            f"{tuple(feats.shape)}; pass the pooled backbone features (DSNOutput.features)."
        )
    if labels.dim() != 1 or labels.shape[0] != feats.shape[0]:
        raise ValueError(
            f"dsn_lab.memory.SketchMemory: expected {what} labels of shape [{feats.shape[0]}], got "
            f"{tuple(labels.shape)}."
        )


class SketchMemory(nn.Module):
    """Per-class bank of ``slots`` sketch features of size ``dim``; state in buffers.

    Buffers: ``memory`` [C, slots, dim], ``fill`` [C] (long, number of filled slots) and, for the fixed mode,
    ``norms`` [C, slots] and ``centres`` [C, dim] (derived caches, kept exact). ``state_dict`` round-trips
    and ``.to(device / dtype)`` moves the bank; ``fill`` stays an integer tensor.
    """

    def __init__(
        self,
        num_classes: int,
        slots: int = 10,
        dim: int = 2048,
        faithful: bool = False,
        *,
        detach_loss: bool | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or slots < 1 or dim < 1:
            raise ValueError(
                f"SketchMemory needs num_classes, slots and dim >= 1, got {num_classes}, {slots}, {dim}."
            )
        self.num_classes, self.slots, self.dim, self.faithful = num_classes, slots, dim, faithful
        # the two released defects apart: the update rule (faithful) and the loss without gradient
        self.detach_loss = faithful if detach_loss is None else bool(detach_loss)
        self.register_buffer("memory", torch.zeros(num_classes, slots, dim))
        self.register_buffer("fill", torch.zeros(num_classes, dtype=torch.long))
        if not faithful:
            self.register_buffer("norms", torch.zeros(num_classes, slots))
            self.register_buffer("centres", torch.zeros(num_classes, dim))

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, slots={self.slots}, dim={self.dim}, faithful={self.faithful}, "
            f"detach_loss={self.detach_loss}"
        )

    # ---- state ------------------------------------------------------------------------------------
    @torch.no_grad()
    def flush(self) -> None:
        """Empty the bank (the released training loop does this at the start of every epoch)."""
        self.memory.zero_()
        self.fill.zero_()
        if not self.faithful:
            self.norms.zero_()
            self.centres.zero_()

    @torch.no_grad()
    def centers(self) -> tuple[Tensor, Tensor]:
        """``(centres [C, dim], valid [C] bool)``: mean of each class's filled slots; zeros where empty."""
        valid = self.fill > 0
        if not self.faithful:
            return self.centres.clone(), valid
        slot_on = torch.arange(self.slots, device=self.fill.device) < self.fill[:, None]
        total = (self.memory * slot_on[..., None].to(self.memory.dtype)).sum(1)
        return total / self.fill.clamp(min=1)[:, None].to(self.memory.dtype), valid

    def used_fraction(self) -> float:
        """Share of filled slots (the released log line "Memory used"); synchronises with the device."""
        return float(self.fill.sum().item()) / (self.num_classes * self.slots)

    # ---- update -----------------------------------------------------------------------------------
    @torch.no_grad()
    def update(
        self, sketch_feats: Tensor, sketch_labels: Tensor, photo_feats: Tensor, photo_labels: Tensor
    ) -> None:
        """Store this batch's sketch features (detached) using the batch's photos as the reference."""
        _check_pair(sketch_feats, sketch_labels, self.dim, "sketch")
        _check_pair(photo_feats, photo_labels, self.dim, "photo")
        dev, dt = self.memory.device, self.memory.dtype
        s, p = sketch_feats.detach().to(dev, dt), photo_feats.detach().to(dev, dt)
        ls, lp = sketch_labels.detach().to(dev, torch.long), photo_labels.detach().to(dev, torch.long)
        if self.faithful:
            self._update_faithful(s, ls, p, lp)
        else:
            self._update_fixed(s, ls, p, lp)

    def _update_faithful(self, s: Tensor, ls: Tensor, p: Tensor, lp: Tensor) -> None:
        # One sketch at a time, as MemoryStore.add_entries; .item() and boolean selection are part of it.
        mem = self.memory
        for i in range(s.shape[0]):
            c = int(ls[i].item())
            n = int(self.fill[c].item())
            if n < self.slots:
                mem[c, n] = s[i]
                self.fill[c] += 1
                continue
            photos = p[lp == c]
            if photos.shape[0] == 0:  # released: mean of nothing is NaN and "NaN > x" is false -> no write
                continue
            q = photos.mean(0, keepdim=True)
            score, furthest = F.cosine_similarity(mem[c], q).min(0)
            if F.cosine_similarity(q, s[i : i + 1]).item() > score.item():
                mem[int(furthest.item())] = s[i]  # the quirk: a whole class row, class index = slot index

    def _update_fixed(self, s: Tensor, ls: Tensor, p: Tensor, lp: Tensor) -> None:
        n, c_num, k, dim, dev, dt = s.shape[0], self.num_classes, self.slots, self.dim, s.device, s.dtype
        if n == 0:
            return
        ar, ar_k = torch.arange(n, device=dev), torch.arange(k, device=dev)
        # Reference of each class: the sum of its photos in this batch (cosine ignores the mean's 1/count).
        psum = torch.zeros(c_num, dim, device=dev, dtype=dt).index_add_(0, lp, p)
        has_photo = torch.zeros(c_num, dtype=torch.bool, device=dev).index_fill_(0, lp, True)
        q = psum.index_select(0, ls)  # [n, dim]: reference of each sketch's class
        q_norm = torch.linalg.vector_norm(q, dim=1)
        s_norm = torch.linalg.vector_norm(s, dim=1)
        new_cos = torch.linalg.vecdot(s, q) / (s_norm * q_norm).clamp(min=_EPS)  # [n]
        rows = self.memory.index_select(0, ls)  # [n, k, dim]: the bank row of each sketch's class
        row_norms = self.norms.index_select(0, ls)
        slot_cos = torch.matmul(q[:, None, :], rows.transpose(1, 2))[:, 0, :] / (
            row_norms * q_norm[:, None]
        ).clamp(min=_EPS)

        # Decide per class (rows of [C, k + n]): candidates are its k slots, then this batch's sketches.
        member = ls[None, :] == torch.arange(c_num, device=dev)[:, None]  # [C, n]
        valid = torch.cat([ar_k[None, :] < self.fill[:, None], member], 1)
        score = torch.cat(
            [
                torch.zeros(c_num, k, device=dev, dtype=dt).index_copy_(0, ls, slot_cos),
                new_cos[None, :].expand(c_num, n),
            ],
            1,
        )
        # without a photo of the class in the batch, every candidate ties and the first arrivals win
        score = torch.where(has_photo[:, None], score, torch.zeros_like(score))
        score = torch.where(valid, score, torch.full_like(score, -float("inf")))
        order = torch.sort(score, dim=1, descending=True, stable=True).indices  # ties: earlier first
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(k + n, device=dev).expand(c_num, k + n)
        )
        keep = valid & (rank < k)
        enter = keep[:, k:]  # [C, n]
        # free slots (empty or evicted) of a class, in slot order, take its entering sketches in batch order
        free_slots = torch.sort(keep[:, :k].to(torch.uint8), dim=1, stable=True).indices  # [C, k]
        enter_rank = (enter.to(torch.long).cumsum(1) - 1).clamp(min=0, max=k - 1)

        # Per sketch: does it enter, and where. A sketch that does not enter rewrites slot 0 of its class with
        # that slot's final value, so all writes of a step go out in one index_copy_ with no selection.
        i_enter = enter[ls, ar]
        i_slot = torch.where(i_enter, free_slots[ls, enter_rank[ls, ar]], torch.zeros_like(ls))
        src0 = torch.full((c_num + 1,), n, dtype=torch.long, device=dev)
        src0.scatter_(
            0, torch.where(i_enter & (i_slot == 0), ls, c_num), ar
        )  # extra entry: sink for the rest
        src = torch.where(i_enter, ar, src0.index_select(0, ls))  # batch index written by sketch i, n: none
        from_batch = src < n
        src_c = src.clamp(max=n - 1)
        value = torch.where(from_batch[:, None], s.index_select(0, src_c), rows[:, 0])
        value_norm = torch.where(from_batch, s_norm.index_select(0, src_c), row_norms[:, 0])
        flat = ls * k + i_slot
        self.memory.view(-1, dim).index_copy_(0, flat, value)
        self.norms.view(-1).index_copy_(0, flat, value_norm)

        # Fill counts, and exact centres of the touched classes: kept old slots plus the entering sketches,
        # computed once per class (from its first sketch in the batch) so duplicate writes agree bit for bit.
        self.fill.copy_((self.fill + member.sum(1)).clamp(max=k))
        first = torch.full((c_num,), n, dtype=torch.long, device=dev).scatter_reduce_(0, ls, ar, "amin")
        rep = first.index_select(0, ls)
        kept_old = keep[:, :k].index_select(0, ls).to(dt)
        centre_sum = torch.matmul(kept_old[:, None, :], rows)[:, 0, :] + enter.index_select(0, ls).to(dt) @ s
        centre = centre_sum.index_select(0, rep) / self.fill.index_select(0, ls)[:, None].to(dt)
        self.centres.index_copy_(0, ls, centre)

    # ---- loss -------------------------------------------------------------------------------------
    def loss(self, photo_feats: Tensor, photo_labels: Tensor) -> Tensor:
        """``1 - mean cos(photo, centre of its class)`` over photos whose class has entries.

        No photo with a non-empty class: 0. ``detach_loss`` (default: ``faithful``): computed on detached
        features, no gradient, as released. Otherwise gradient flows to ``photo_feats`` (never into the
        bank); in the fixed mode the "none" case is a 0 that is still attached to the graph with zero
        gradient, so the result needs no host round-trip.
        """
        if photo_feats.dim() != 2 or photo_feats.shape[1] != self.dim:
            raise ValueError(
                f"SketchMemory.loss: expected photo features [N, {self.dim}], got {tuple(photo_feats.shape)}."
            )
        lp = photo_labels.detach().long().to(self.fill.device)
        if self.detach_loss:
            photo_feats = photo_feats.detach()
        if self.faithful:
            return self._loss_faithful(photo_feats, lp)
        w = (self.fill.index_select(0, lp) > 0).to(photo_feats.dtype)
        centre = self.centres.index_select(0, lp).to(photo_feats.dtype)
        norms = torch.linalg.vector_norm(photo_feats, dim=1) * torch.linalg.vector_norm(centre, dim=1)
        cos = torch.linalg.vecdot(photo_feats, centre) / norms.clamp(min=_EPS)
        return (w * (1.0 - cos)).sum() / w.sum().clamp(min=1.0)

    def _loss_faithful(self, p: Tensor, lp: Tensor) -> Tensor:
        # As MemoryStore.memory_loss (+ the training script's "1 - ..."): a Python sum over photos in order.
        total, count = None, 0
        mem = self.memory.to(p.dtype)
        for i in range(p.shape[0]):
            n = int(self.fill[lp[i]].item())
            if n == 0:
                continue
            centre = mem[lp[i], :n].mean(0)
            cos = F.cosine_similarity(p[i : i + 1], centre[None, :])
            total = cos if total is None else total + cos
            count += 1
        if total is None:
            return p.sum() * 0.0  # 0, attached to the graph when p is (zero gradient)
        return (1.0 - total / count)[0]
