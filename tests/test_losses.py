"""Losses: SupCon against a brute-force float64 loop, SAKE-KD against a hand-computed case, DSNObjective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dsn_lab.config import get_preset
from dsn_lab.losses import DSNObjective, LossOutput, SoftCrossEntropy, SupConLoss, sake_kd_loss


def supcon_brute_force(features: torch.Tensor, labels: torch.Tensor, t: float, t_base: float) -> float:
    """Khosla et al. eq. 2, one anchor and one positive at a time, in float64 Python loops.

    Anchors without a positive are left out of the mean (the documented rule)."""
    n, v, _ = features.shape
    z = [(features[i, a].double(), int(labels[i])) for a in range(v) for i in range(n)]
    per_anchor = []
    for ai, (za, la) in enumerate(z):
        denom = sum(math.exp(float(za @ zb) / t) for bi, (zb, _) in enumerate(z) if bi != ai)
        pos = [float(za @ zp) / t - math.log(denom) for pi, (zp, lp) in enumerate(z) if pi != ai and lp == la]
        if pos:
            per_anchor.append(-(t / t_base) * sum(pos) / len(pos))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


@pytest.mark.parametrize("seed,t,t_base", [(0, 0.07, 0.07), (1, 0.5, 0.07), (2, 0.1, 0.2)])
def test_supcon_matches_brute_force(seed, t, t_base):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(12, 2, 8, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, 4, (12,), generator=g)
    got = SupConLoss(t, t_base)(feats, labels)
    assert got.item() == pytest.approx(supcon_brute_force(feats, labels, t, t_base), rel=1e-10)
    # float32 path agrees to float32 precision
    got32 = SupConLoss(t, t_base)(feats.float(), labels)
    assert got32.item() == pytest.approx(got.item(), rel=1e-4)


def test_supcon_equals_released_formula_when_all_anchors_have_positives():
    """The released code's arithmetic, re-stated (mask * log_prob / mask.sum): same value."""
    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(8, 2, 5, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    z = torch.cat(torch.unbind(feats, 1), 0)
    logits = z @ z.T / 0.07
    logits = logits - logits.max(1, keepdim=True).values
    mask = (labels[:, None] == labels[None, :]).float().repeat(2, 2)
    not_self = 1 - torch.eye(16)
    mask = mask * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    released = (-(mask * log_prob).sum(1) / mask.sum(1)).mean()
    torch.testing.assert_close(SupConLoss()(feats, labels), released)


def test_supcon_anchor_without_positive_is_excluded_and_finite():
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(5, 1, 6, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one member and one view: no positive
    loss = SupConLoss()(feats, labels)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(supcon_brute_force(feats, labels, 0.07, 0.07), rel=1e-10)


def test_supcon_no_positive_at_all_and_empty_batch():
    feats = F.normalize(torch.randn(4, 1, 3), dim=-1).requires_grad_()
    loss = SupConLoss()(feats, torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(feats.grad == 0)
    empty = torch.zeros(0, 2, 3, requires_grad=True)
    loss = SupConLoss()(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    single = torch.ones(1, 1, 3, requires_grad=True)
    assert SupConLoss()(single, torch.zeros(1, dtype=torch.long)).item() == 0.0


def test_supcon_errors():
    with pytest.raises(ValueError, match="n_views"):
        SupConLoss()(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(torch.zeros(4, 2, 3), torch.zeros(3))


def test_supcon_gradcheck():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(5, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1])  # class 2: only its own second view is a positive
    assert torch.autograd.gradcheck(lambda f: SupConLoss(0.5, 0.07)(F.normalize(f, dim=-1), labels), (feats,))


def test_kd_hand_computed():
    # two samples, a sketch (ignored) and a photo, three "ImageNet" classes
    student = torch.tensor([[5.0, -1.0, 0.0], [1.0, 2.0, 0.5]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 9.0, 0.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    cid = torch.tensor([[1.0, 0.0, 0.0], [0.2, 1.0, 0.0]], dtype=torch.float64)
    kd_lambda, kdneg = 2.0, 0.3
    # photo row by hand: target logits = 2 * teacher + 0.3 * cid
    t = [2 * 0.5 + 0.3 * 0.2, 2 * 0.0 + 0.3 * 1.0, 2 * 1.0 + 0.3 * 0.0]
    w = [math.exp(x) / sum(math.exp(y) for y in t) for x in t]
    log_z = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    expected = -sum(wi * (si - log_z) for wi, si in zip(w, [1.0, 2.0, 0.5]))
    got = sake_kd_loss(student, teacher, torch.tensor([0, 1]), cid, kd_lambda=kd_lambda, kdneg=kdneg)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # [N, 1] flags as the released code passes them, and the released module's call convention
    got2 = SoftCrossEntropy()(
        student, teacher * kd_lambda, torch.tensor([[0.0], [1.0]], dtype=torch.float64), cid * kdneg
    )
    assert got2.item() == pytest.approx(expected, rel=1e-12)


def test_kd_averages_over_photos_only():
    g = torch.Generator().manual_seed(6)
    s, t, cid = (torch.randn(6, 10, generator=g) for _ in range(3))
    domain = torch.tensor([0, 0, 1, 1, 1, 0])
    got = sake_kd_loss(s, t, domain, cid)
    photos = domain.bool()
    per_row = -(F.softmax(t + 0.3 * cid, 1) * F.log_softmax(s, 1)).sum(1)
    torch.testing.assert_close(got, per_row[photos].mean())
    # sketches' rows do not matter at all
    s2 = s.clone()
    s2[~photos] = 100.0
    torch.testing.assert_close(sake_kd_loss(s2, t, domain, cid), got)
    # no domain: mean over all rows; an all-sketch batch: 0, finite
    torch.testing.assert_close(sake_kd_loss(s, t, None, cid), per_row.mean())
    assert sake_kd_loss(s, t, 0, cid).item() == 0.0
    # gradient reaches the student only
    s.requires_grad_(True)
    t.requires_grad_(True)
    sake_kd_loss(s, t, domain, cid).backward()
    assert s.grad.abs().sum() > 0 and s.grad[~photos].abs().sum() == 0 and t.grad is None
    with pytest.raises(ValueError, match="table\\[labels\\]"):
        sake_kd_loss(s, t, domain, cid[:2])


def _inputs(n=6, classes=3, dim=4):
    g = torch.Generator().manual_seed(7)
    return dict(
        logits=torch.randn(n, classes, generator=g, requires_grad=True),
        labels=torch.tensor([0, 1, 2, 0, 1, 2])[:n],
        kd_logits=torch.randn(n, 10, generator=g, requires_grad=True),
        teacher_logits=torch.randn(n, 10, generator=g),
        domain=torch.tensor([0, 0, 0, 1, 1, 1])[:n],
        cid_mask=torch.rand(n, 10, generator=g),
        contrastive_features=F.normalize(torch.randn(n, 2, dim, generator=g), dim=-1),
        memory_loss=torch.tensor(0.25),
    )


def test_objective_terms_and_weights():
    cfg = get_preset("cpu-quick")
    x = _inputs()
    out = DSNObjective(cfg)(**x)
    assert isinstance(out, LossOutput) and set(out.terms) == {"ce", "kd", "contrastive", "memory"}
    torch.testing.assert_close(out.terms["ce"], F.cross_entropy(x["logits"], x["labels"]))
    torch.testing.assert_close(
        out.terms["kd"],
        sake_kd_loss(x["kd_logits"], x["teacher_logits"], x["domain"], x["cid_mask"], 1.0, 0.3),
    )
    torch.testing.assert_close(
        out.terms["contrastive"], SupConLoss(0.07)(x["contrastive_features"], x["labels"])
    )
    expected = out.terms["ce"] + out.terms["kd"] + 0.1 * out.terms["contrastive"] + 0.25
    torch.testing.assert_close(out.total, expected)
    scaled = DSNObjective(cfg.replace(w_ce=2.0, w_kd=0.5, w_contrastive=3.0, w_memory=4.0))(**x)
    torch.testing.assert_close(
        scaled.total,
        2 * out.terms["ce"] + 0.5 * out.terms["kd"] + 3 * out.terms["contrastive"] + 4 * 0.25,
    )
    out.total.backward()
    assert x["logits"].grad is not None and x["kd_logits"].grad is not None


def test_objective_switches_drop_terms():
    cfg = get_preset("cpu-quick")
    x = _inputs()
    off = DSNObjective(cfg.replace(use_kd=False, use_contrastive=False, use_memory=False))
    out = off(logits=x["logits"], labels=x["labels"])
    assert set(out.terms) == {"ce"}
    torch.testing.assert_close(out.total, out.terms["ce"])
    only_mem = DSNObjective(cfg.replace(use_kd=False, use_contrastive=False))(**x)
    assert set(only_mem.terms) == {"ce", "memory"}
    torch.testing.assert_close(only_mem.total, only_mem.terms["ce"] + 0.25)
    with pytest.raises(ValueError, match="use_kd"):
        DSNObjective(cfg)(
            logits=x["logits"], labels=x["labels"], contrastive_features=x["contrastive_features"]
        )
    with pytest.raises(ValueError, match="use_memory"):
        DSNObjective(cfg.replace(use_kd=False, use_contrastive=False))(logits=x["logits"], labels=x["labels"])
