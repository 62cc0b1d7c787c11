"""The linear probe and the DSN head started from it (dsn_lab/probe.py), against numpy float64 references."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from looplib import loop_cfg  # noqa: E402

import dsn_lab.train as T  # noqa: E402
from dsn_lab.data import get_dataset  # noqa: E402
from dsn_lab.data.transforms import eval_transform  # noqa: E402
from dsn_lab.inference import encode, image_loader  # noqa: E402
from dsn_lab.model import DSNModel, build_model  # noqa: E402
from dsn_lab.probe import fit_probe, init_head_from_probe, probe_head  # noqa: E402


def _clusters(n_classes: int, per_class: int, dim: int, seed: int, noise: float = 0.3):
    """Sketch and photo features of ``n_classes`` Gaussian clusters whose photo centres are the sketch
    centres shifted by one common offset (a domain gap)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    offset = rng.normal(size=dim) * 0.5
    lab = np.repeat(np.arange(n_classes), per_class)
    sk = centres[lab] + noise * rng.normal(size=(len(lab), dim))
    ph = centres[lab] + offset + noise * rng.normal(size=(len(lab), dim))
    return sk.astype(np.float32), lab, ph.astype(np.float32), lab


def _cosine_accuracy(proj: nn.Linear, weights: torch.Tensor, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        z = F.normalize(proj(F.normalize(torch.as_tensor(x), dim=1)), dim=1)
        pred = (z @ F.normalize(weights, dim=1).T).argmax(1).numpy()
    return float((pred == y).mean())


def test_probe_learns_separable_concepts_and_keeps_the_best_val_step() -> None:
    train = _clusters(6, 8, 20, seed=0)
    val = _clusters(6, 4, 20, seed=0)  # the same centres: the held-out concepts are easy
    proj, weights, info = fit_probe(train, 6, 8, steps=120, seed=0, val=val, eval_every=20)
    assert proj.weight.shape == (8, 20) and weights.shape == (6, 8)
    assert _cosine_accuracy(proj, weights, train[2], train[3]) > 0.95
    assert info["step"] % 20 == 0 and 0.0 < info["val_mAP@all"] <= 1.0
    again, _, info2 = fit_probe(train, 6, 8, steps=120, seed=0, val=val, eval_every=20)
    assert torch.equal(again.weight, proj.weight) and info2 == info  # seeded


def test_probe_without_val_keeps_the_last_step_and_bias_flag() -> None:
    train = _clusters(3, 5, 10, seed=1)
    proj, _, info = fit_probe(train, 3, 4, steps=7, bias=False, seed=0)
    assert proj.bias is None and info["step"] == 7 and np.isnan(info["val_mAP@all"])
    with pytest.raises(ValueError, match="steps"):
        fit_probe(train, 3, 4, steps=0)
    empty = (np.zeros((0, 10), np.float32), np.zeros(0, int), np.zeros((0, 10), np.float32), np.zeros(0, int))
    with pytest.raises(ValueError, match="empty"):
        fit_probe(empty, 3, 4, steps=3)


def _toy_model(classifier_scale: float | None = 16.0, feature_dim: int = 12, d: int = 4) -> DSNModel:
    torch.manual_seed(0)
    model = DSNModel(nn.Identity(), feature_dim, d, 5, "toy", classifier_scale=classifier_scale)
    with torch.no_grad():
        model.hashing.bias.normal_()
    return model


def _ref_kd_fit(points: np.ndarray, h_old, k_old, h_new) -> np.ndarray:
    """Normal equations in float64: K^T = (C^T C)^-1 C^T T with C = P h_new^T, T = P h_old^T k_old^T."""
    c = points @ h_new.T
    t = points @ h_old.T @ k_old.T
    return np.linalg.solve(c.T @ c, c.T @ t).T


@pytest.mark.parametrize("with_features", [False, True])
def test_init_head_copies_the_probe_and_refits_the_kd_head(with_features: bool) -> None:
    model = _toy_model()
    h_old = model.hashing.weight.detach().double().numpy().copy()
    k_old = model.kd_head.weight.detach().double().numpy().copy()
    kd_bias_old = model.kd_head(model.hashing.bias).detach().double().numpy()  # the old constant term
    proj = nn.Linear(12, 4, bias=False)
    weights = torch.randn(5, 4)
    feats = np.random.default_rng(2).normal(size=(40, 12)) if with_features else None
    info = init_head_from_probe(model, proj, weights, feats)
    assert torch.equal(model.hashing.weight, proj.weight) and torch.count_nonzero(model.hashing.bias) == 0
    assert torch.equal(model.classifier.weight, weights)
    points = feats if with_features else np.eye(12)
    ref = _ref_kd_fit(points, h_old, k_old, proj.weight.detach().double().numpy())
    np.testing.assert_allclose(model.kd_head.weight.detach().double().numpy(), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        model.kd_head.bias.detach().double().numpy(), kd_bias_old, rtol=1e-5, atol=1e-6
    )
    target = points @ h_old.T @ k_old.T
    fitted = points @ proj.weight.detach().double().numpy().T @ ref.T
    assert info["kd_fit_rel_error"] == pytest.approx(np.linalg.norm(fitted - target) / np.linalg.norm(target))


def test_init_head_keeps_the_kd_map_when_the_new_code_spans_the_old() -> None:
    """A new hashing layer R @ h_old (R invertible) spans the same rows: the composite map is kept exactly,
    and the model's KD logits of any feature are unchanged."""
    model = _toy_model()
    x = torch.randn(7, 12)
    before = model.kd_head(model.hashing(x)).detach()
    proj = nn.Linear(12, 4, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(4, 4) @ model.hashing.weight)
    info = init_head_from_probe(model, proj, torch.randn(5, 4))
    assert info["kd_fit_rel_error"] < 1e-4  # float32 weights
    torch.testing.assert_close(model.kd_head(model.hashing(x)), before, rtol=1e-4, atol=1e-4)


def test_init_head_refuses_what_it_cannot_copy() -> None:
    with pytest.raises(ValueError, match="cosine classifier"):
        init_head_from_probe(
            _toy_model(classifier_scale=None), nn.Linear(12, 4, bias=False), torch.randn(5, 4)
        )
    with pytest.raises(ValueError, match="bias=False"):
        init_head_from_probe(_toy_model(), nn.Linear(12, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="do not match"):
        init_head_from_probe(_toy_model(), nn.Linear(12, 3, bias=False), torch.randn(5, 3))


def test_probe_head_makes_the_model_classify_its_training_images(synth: Path, tmp_path: Path) -> None:
    """On the synthetic EmojiSketch: the model's own classifier, started from the probe, names the
    training photos' concepts as well as the probe does on their features (a random head: chance)."""
    cfg = loop_cfg(tmp_path / "run", classifier_scale=16.0, head_init="probe", probe_steps=150)
    sk = get_dataset(cfg.dataset, synth, split="train", domain="sketch", verbose=False)
    ph = get_dataset(cfg.dataset, synth, split="train", domain="photo", verbose=False)
    model = build_model(cfg, len(sk.classes)).eval()
    loader = image_loader(ph, transform=eval_transform(cfg.image_size))
    before, labels = encode(model, loader, domain=1, output="logits")
    info = probe_head(cfg, model, sk, ph, torch.device("cpu"))
    after, _ = encode(model, loader, domain=1, output="logits")
    assert info["step"] == 150 and info["kd_fit_rel_error"] >= 0.0
    chance = 1.0 / len(sk.classes)
    acc_after = float((after.argmax(1) == labels).mean())
    assert acc_after > max(0.8, 3 * float((before.argmax(1) == labels).mean()), 3 * chance)
    assert torch.count_nonzero(model.hashing.bias) == 0


def test_training_with_head_init_probe_starts_from_the_probe(synth: Path, tmp_path: Path) -> None:
    cfg = loop_cfg(tmp_path / "run", classifier_scale=16.0, head_init="probe", probe_steps=10)
    res = T.train(cfg, data_root=synth, verbose=False)
    assert res.stopped == "completed"
    assert all(np.isfinite(r["loss"]) for r in res.history if r["kind"] == "step")
    # resuming the finished run restores its trained head (no second probe)
    again = T.train(cfg, data_root=synth, resume=True, verbose=False)
    assert again.final_checkpoint == res.final_checkpoint
    with pytest.raises(ValueError, match="head_init"):
        cfg.replace(head_init="svd")
