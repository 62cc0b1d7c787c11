"""dsn_lab.step.dsn_losses against a restatement of the released training step (train_cse_resnet_*_ext.py).

The restatement below follows the released ``train()`` line by line, in plain torch: one forward over
``[sketch, photo, sketch1, photo1, sketch2, photo2]``, ``MemoryStore.add_entries`` / ``memory_loss``, the
released ``SupConLoss`` and ``SoftCrossEntropy``. The model is a CSE-ResNet50 (dsn_lab.model) at tiny depth
wrapped like the released ``CSEResnetModel_KDHashing`` (a plain 4-tuple, domain as a float [N, 1] column).
Every slot of the batch holds a different image, so a wrong slice changes CE, KD, SupCon or the memory term;
the gradients of the total are compared too, so a detached term is caught.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsn_lab.config import get_preset
from dsn_lab.memory import SketchMemory
from dsn_lab.model import CSEResNet50, DSNModel
from dsn_lab.step import dsn_losses, lr_factor

S, P, C, SLOTS = 4, 6, 3, 2


# ---------------------------------------------------------------------------------------------------
# the released code, restated
# ---------------------------------------------------------------------------------------------------
class ReleasedLike(nn.Module):
    """``CSEResnetModel_KDHashing``'s forward: (out, out_kd, hash_code, features) as a plain tuple."""

    def __init__(self, hashing_dim: int = 8, num_classes: int = C) -> None:
        super().__init__()
        self.features = CSEResNet50(layers=(1, 1, 1, 1))
        self.hashing = nn.Linear(2048, hashing_dim)
        self.linear = nn.Linear(hashing_dim, num_classes)
        self.logits = nn.Linear(hashing_dim, 1000)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        assert y.shape == (x.shape[0], 1) and y.dtype.is_floating_point  # the released domain column
        features = self.features(x, y)
        hash_code = self.hashing(features)
        return self.linear(hash_code), self.logits(hash_code), hash_code, features


class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(9, 1000)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.conv(x).mean((2, 3)), y], 1))


def released_supcon(features: torch.Tensor, labels: torch.Tensor, t: float = 0.07) -> torch.Tensor:
    n, views = features.shape[:2]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).to(features.dtype).repeat(views, views)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / t
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    logits_mask = torch.ones_like(mask) - torch.eye(n * views, dtype=mask.dtype)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(t / 0.07) * mean_log_prob_pos).view(views, n).mean()


def released_soft_ce(inp, target, mask=None, mask_pos=None) -> torch.Tensor:
    log_likelihood = -F.log_softmax(inp, dim=1)
    if mask_pos is not None:
        target = target + mask_pos
    if mask is None:
        return torch.sum(log_likelihood * F.softmax(target, dim=1)) / inp.shape[0]
    return torch.sum(log_likelihood * F.softmax(target, dim=1) * mask) / torch.sum(mask)


class ReleasedMemory:
    """``tool.MemoryStore``; ``row_overwrite=False`` writes ``memory[label][idx]`` (the corrected rule)."""

    def __init__(self, n_classes: int, topk: int, dim: int, row_overwrite: bool) -> None:
        self.embeds = torch.zeros(n_classes, topk, dim, dtype=torch.float64)
        self.flag = torch.zeros(n_classes, dtype=torch.long)
        self.topk, self.row_overwrite = topk, row_overwrite
        self.replaced = 0

    def add_entries(self, embeds, labels, queries, query_labels) -> None:
        for idx, embed in enumerate(embeds):
            c = int(labels[idx])
            saved = int(self.flag[c])
            if saved < self.topk:
                self.embeds[c][saved] = embed
                self.flag[c] += 1
                continue
            query = torch.mean(queries[torch.nonzero(query_labels == c).view(-1)], 0)
            scores = F.cosine_similarity(self.embeds[c], query.view(1, -1))
            score, furthest = torch.min(scores, 0)
            if F.cosine_similarity(query.view(1, -1), embed.view(1, -1)) > score:
                self.replaced += 1
                if self.row_overwrite:
                    self.embeds[furthest] = embed
                else:
                    self.embeds[c][furthest] = embed

    def memory_loss(self, queries, labels) -> torch.Tensor:
        loss = []
        for idx, query in enumerate(queries):
            n = int(self.flag[labels[idx]])
            if n:
                center = torch.mean(self.embeds[labels[idx]][:n, :], 0)
                loss.append(F.cosine_similarity(query.view(1, -1), center.view(1, -1)))
        return sum(loss) / len(loss) if loss else torch.tensor([1.0], dtype=torch.float64)


def released_step(model, model_t, batch, cid_table, memory, cfg) -> dict[str, torch.Tensor]:
    sketch, image = batch["sketch"], batch["photo"]
    (sketch1, sketch2), (image1, image2) = batch["sketch_views"], batch["photo_views"]
    label_s, label_i = batch["sketch_label"], batch["photo_label"]
    tag_zeros = torch.zeros(sketch.size(0), 1, dtype=sketch.dtype)
    tag_ones = torch.ones(image.size(0), 1, dtype=sketch.dtype)
    tag_all = torch.cat([tag_zeros, tag_ones], dim=0)
    target_all = torch.cat([label_s, label_i])
    cid_mask_all = cid_table[target_all]
    output, output_kd, hash_code, features = model(
        torch.cat([sketch, image, sketch1, image1, sketch2, image2], 0), torch.cat([tag_all] * 3, 0)
    )
    n = tag_all.size(0)
    output, output_kd = output[:n], output_kd[:n]
    s = tag_zeros.size(0)
    memory.add_entries(features[:s].detach(), label_s, features[s:n].detach(), label_i)
    mem_in = features[s:n] if cfg.quirk("memory_grad") else features[s:n].detach()
    loss_memory = 1 - memory.memory_loss(mem_in, label_i)
    cf = F.normalize(hash_code[n:])
    contrastive = torch.cat([cf[:n].unsqueeze(1), cf[n:].unsqueeze(1)], 1)
    with torch.no_grad():
        output_t = model_t(torch.cat([sketch, image], 0), tag_all)
    terms = {
        "ce": F.cross_entropy(output, target_all),
        "kd": released_soft_ce(output_kd, output_t * cfg.kd_lambda, tag_all, cid_mask_all * cfg.kdneg),
        "contrastive": released_supcon(contrastive, target_all, cfg.temperature),
        "memory": loss_memory.reshape(()),
    }
    terms["total"] = terms["ce"] + terms["kd"] + 0.1 * terms["contrastive"] + terms["memory"]
    return terms


# ---------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------
def _batch(seed: int, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)

    def img(n: int) -> torch.Tensor:  # a different image in every slot
        return torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)

    return {
        "sketch": img(S),
        "photo": img(P),
        "sketch_views": [img(S), img(S)],
        "photo_views": [img(P), img(P)],
        "sketch_label": torch.tensor([0, 1, 2, 0]).roll(seed),
        "photo_label": torch.tensor([1, 2, 0, 1, 2, 0]).roll(seed),
    }


def _full_input(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The released forward's input: [sketch, photo, sketch1, photo1, sketch2, photo2] and its flags."""
    parts = [batch["sketch"], batch["photo"]]
    for sv, pv in zip(batch["sketch_views"], batch["photo_views"], strict=True):
        parts += [sv, pv]
    dom = torch.cat([torch.zeros(S), torch.ones(P)]).repeat(3)[:, None].double()
    return torch.cat(parts), dom


def _models() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = ReleasedLike().double().train()
    teacher = Teacher().double().eval()
    cid = torch.rand(C, 1000, dtype=torch.float64)
    return model, teacher, cid


def _cfg(**kw):
    return get_preset("sketchy-s1-paper", **kw)


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=1e-12))


# ---------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("faithful", [True, False], ids=["released", "fixed"])
def test_every_term_matches_the_released_step(faithful: bool) -> None:
    cfg = _cfg(faithful=faithful)
    model, teacher, cid = _models()
    ours = SketchMemory(C, SLOTS, 2048, faithful=cfg.quirk("memory_row_overwrite")).double()
    ref = ReleasedMemory(C, SLOTS, 2048, row_overwrite=cfg.quirk("memory_row_overwrite"))
    for step in range(3):  # step 2 fills the slots; step 3 replaces entries (the overwrite rule matters)
        batch = _batch(step)
        got = dsn_losses(model, batch, cfg, teacher=teacher, memory=ours, cid_mask=cid)
        want = released_step(model, teacher, batch, cid, ref, cfg)
        assert set(got) == {"ce", "kd", "contrastive", "memory", "total"}
        for key in want:
            assert _close(got[key], want[key]), (step, key, float(got[key]), float(want[key]))
        for a, b in zip(_grads(model, got["total"]), _grads(model, want["total"]), strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert _close(a, b, rtol=1e-6), step
        assert (
            0.0 < float(got["memory"].detach()) < 2.0
        )  # the bank is in use: the term is not the empty-bank 0
    assert ref.replaced > 0  # the replacement rule (row overwrite or not) was exercised


def test_released_memory_term_has_no_gradient_and_fixed_one_has() -> None:
    model, teacher, cid = _models()
    batch = _batch(0)
    for faithful, expect in ((True, False), (False, True)):
        cfg = _cfg(faithful=faithful, use_kd=False, use_contrastive=False)
        mem = SketchMemory(C, SLOTS, 2048, faithful=faithful, detach_loss=False).double()
        out = dsn_losses(model, batch, cfg, memory=mem)
        assert out["memory"].requires_grad is expect
    # an explicit memory_grad wins over faithful
    cfg = _cfg(faithful=True, memory_grad=True, use_kd=False, use_contrastive=False)
    mem = SketchMemory(C, SLOTS, 2048, faithful=True, detach_loss=False).double()
    assert dsn_losses(model, batch, cfg, memory=mem)["memory"].requires_grad


def test_swapped_slices_change_the_terms() -> None:
    """The batch really distinguishes the routing: swapping sketches and photos changes CE, KD and SupCon."""
    model, teacher, cid = _models()
    cfg = _cfg(use_memory=False)
    batch = _batch(1)
    base = dsn_losses(model, batch, cfg, teacher=teacher, cid_mask=cid)
    pairs = list(zip(batch["sketch_views"], batch["photo_views"], strict=True))
    swapped = dict(  # the first S images of each view change slot (and domain flag) between sketch and photo
        batch,
        sketch_views=[pv[:S] for _, pv in pairs],
        photo_views=[torch.cat([sv, pv[S:]]) for sv, pv in pairs],
    )
    other = dsn_losses(model, swapped, cfg, teacher=teacher, cid_mask=cid)
    assert not _close(base["contrastive"], other["contrastive"])
    flipped = dict(batch, sketch=batch["photo"][:S], photo=torch.cat([batch["sketch"], batch["photo"][S:]]))
    other = dsn_losses(model, flipped, cfg, teacher=teacher, cid_mask=cid)
    assert not _close(base["ce"], other["ce"]) and not _close(base["kd"], other["kd"])


def test_kd_domains_both_averages_over_sketches_too() -> None:
    model, teacher, cid = _models()
    batch = _batch(0)
    photo = dsn_losses(model, batch, _cfg(use_memory=False), teacher=teacher, cid_mask=cid)["kd"]
    both = dsn_losses(model, batch, _cfg(use_memory=False, kd_domains="both"), teacher=teacher, cid_mask=cid)
    with torch.no_grad():
        x, dom = _full_input(batch)  # BatchNorm in train mode: the statistics of the whole forward
        kd = model(x, dom)[1][: S + P]
        target = teacher(x[: S + P], dom[: S + P])
        target = target + 0.3 * cid[torch.cat([batch["sketch_label"], batch["photo_label"]])]
        rows = (-F.log_softmax(kd, 1) * F.softmax(target, 1)).sum(1)
    assert _close(photo, rows[S:].mean()) and _close(both["kd"], rows.mean())


def test_projection_head_feeds_supcon() -> None:
    torch.manual_seed(0)
    model = DSNModel(CSEResNet50(layers=(1, 1, 1, 1)), 2048, 8, C, contrastive_dim=5).double()
    assert model.projection is not None and model.projection[-1].out_features == 5
    batch = _batch(0)
    cfg = _cfg(use_kd=False, use_memory=False, contrastive_dim=5)
    got = dsn_losses(model, batch, cfg)["contrastive"]
    n = S + P
    with torch.no_grad():
        x, dom = _full_input(batch)
        z = F.normalize(model.projection(model(x, dom)[2][n:]), dim=1)
        labels = torch.cat([batch["sketch_label"], batch["photo_label"]])
        want = released_supcon(torch.stack([z[:n], z[n:]], 1), labels)
    assert _close(got, want)
    plain = DSNModel(CSEResNet50(layers=(1, 1, 1, 1)), 2048, 8, C).double()
    with pytest.raises(ValueError, match="projection"):
        dsn_losses(plain, batch, cfg)


def test_missing_teacher_or_memory_is_an_error() -> None:
    model, _, _ = _models()
    with pytest.raises(ValueError, match="teacher"):
        dsn_losses(model, _batch(0), _cfg(use_memory=False))
    with pytest.raises(ValueError, match="memory"):
        dsn_losses(model, _batch(0), _cfg(use_kd=False))


def test_switched_off_terms_are_absent_and_total_is_weighted() -> None:
    model, teacher, cid = _models()
    cfg = _cfg(use_memory=False, use_contrastive=False, w_ce=2.0, w_kd=0.5)
    out = dsn_losses(model, _batch(0), cfg, teacher=teacher, cid_mask=cid)
    assert set(out) == {"ce", "kd", "total"}
    assert _close(out["total"], 2.0 * out["ce"] + 0.5 * out["kd"])


@pytest.mark.parametrize("fp32", [True, False])
def test_teacher_runs_in_fp32_outside_autocast_when_released(fp32: bool) -> None:
    from dsn_lab.step import dsn_step

    seen = []

    class Recording(Teacher):
        def forward(self, x, y):
            seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
            return super().forward(x, y)

    torch.manual_seed(0)
    model = ReleasedLike().float()
    teacher = Recording().float().eval()
    batch = {k: ([t.float() for t in v] if isinstance(v, list) else v) for k, v in _batch(0).items()}
    batch = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.items()}
    cfg = _cfg(use_memory=False, use_contrastive=False, teacher_fp32=fp32)
    dsn_step(model, batch, cfg, teacher=teacher, autocast_dtype=torch.bfloat16)
    assert seen == [(torch.float32, not fp32)]


def test_lr_factor_schedules() -> None:
    cfg = get_preset("cpu-quick", epochs=20, lr_schedule="exp", lr_decay=1e-3)
    assert lr_factor(cfg, 0, 0, 100) == 1.0
    assert lr_factor(cfg, 10, 50, 100) == pytest.approx(1e-3**0.5)
    cos = cfg.replace(lr_schedule="cosine")
    assert lr_factor(cos, 0, 0, 100) == 1.0
    assert lr_factor(cos, 0, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cos, 0, 100, 100) == pytest.approx(0.0)
    timed = cos.replace(max_train_seconds=10.0)  # progress: the larger of steps and time used
    assert lr_factor(timed, 0, 10, 100, elapsed=5.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(cfg.replace(lr_schedule="step"), 0, 0, 1)


def test_guard_only_time_cap_leaves_the_schedule_to_the_steps() -> None:
    cos = get_preset("cpu-quick", epochs=20, lr_schedule="cosine", max_train_seconds=10.0)
    assert lr_factor(cos, 0, 10, 100, elapsed=5.0) == pytest.approx(0.5)  # a budget: time steers it
    guard = cos.replace(lr_follows_time=False)
    for elapsed in (0.0, 5.0, 9.9, 1e6):
        assert lr_factor(guard, 0, 10, 100, elapsed=elapsed) == pytest.approx(
            0.5 * (1 + math.cos(math.pi * 0.1))
        )
    for name, steps in (("emoji-demo", 400), ("emoji-course", 160)):  # a fixed step count, the cap a guard
        cfg = get_preset(name)
        assert cfg.steps_per_epoch * cfg.epochs == steps and not cfg.lr_follows_time
        assert cfg.max_train_seconds >= 1800
