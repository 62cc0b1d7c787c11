"""A linear probe on frozen features, and a DSN head started from one (linear probing, then fine-tuning).

The demo's "head trained on frozen features" row is :func:`fit_probe`: a projection to the code size and a
cosine classifier, trained with CE on the L2-normalised pooled ImageNet features of every training sketch
and photo (seconds on the CPU). ``head_init="probe"`` (config) starts DSN from such a probe instead of the
SVD of the ImageNet classifier: the fine-tuning then begins from a head that already ranks, and its first
steps do not push the backbone's features around to fit a random classifier (Kumar et al., ICLR 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution").

:func:`init_head_from_probe` copies the probe into the model: the projection becomes the hashing layer
(no bias: the probe reads ``f / |f|``, the hashing layer reads ``f``, so the code has the same direction and
the cosine classifier and the normalised retrieval codes are unchanged), the probe's class weights become
the cosine classifier, and the KD head is refitted by least squares so that KD head o hashing stays the
same map to ImageNet logits as before (the SAKE distillation starts where it would have).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsn_lab.config import DSNConfig
from dsn_lab.data.transforms import eval_transform
from dsn_lab.inference import encode, image_loader
from dsn_lab.metrics import evaluate_retrieval

__all__ = ["fit_probe", "init_head_from_probe", "probe_head"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # sketch feats, labels, photo feats, labels


def _val_map(proj: nn.Linear, val: Arrays) -> float:
    vsk, vskl, vph, vphl = val
    with torch.no_grad():
        q = proj(F.normalize(torch.as_tensor(vsk).float(), dim=1)).numpy()
        g = proj(F.normalize(torch.as_tensor(vph).float(), dim=1)).numpy()
    return float(evaluate_retrieval(q, vskl, g, vphl, normalize=True, on_missing="skip")["mAP@all"])


def fit_probe(
    train: Arrays,
    num_classes: int,
    dim: int,
    *,
    steps: int = 400,
    scale: float = 16.0,
    bias: bool = True,
    seed: int = 0,
    val: Arrays | None = None,
    eval_every: int = 25,
) -> tuple[nn.Linear, torch.Tensor, dict[str, Any]]:
    """A projection ``C -> dim`` and a cosine classifier (``scale * cos(code, w_c)``) trained with CE on
    frozen features: ``(projection, class weights [num_classes, dim], info)``.

    ``train``: (sketch features, labels, photo features, labels); rows are L2-normalised here. Sketches and
    photos of a concept share its class weight, which pulls the two domains together; sketches are weighted
    up so that both domains count equally (about one sketch per concept against five photos). Full-batch
    AdamW (lr 1e-3), a little feature noise against over-fitting. With ``val`` (the held-out concepts' sketch
    and photo features) the step with the best val mAP@all (checked every ``eval_every`` steps) is kept,
    else the last. ``info``: ``{"val_mAP@all", "step", "loss"}``.
    """
    if steps < 1:
        raise ValueError(f"fit_probe: steps must be >= 1, got {steps}")
    sk, skl, ph, phl = (torch.as_tensor(a) for a in train)
    if len(sk) + len(ph) == 0:
        raise ValueError("fit_probe: no training features (both domains are empty)")
    torch.manual_seed(seed)
    x = F.normalize(torch.cat([sk, ph]).float(), dim=1)
    y = torch.cat([skl, phl]).long()
    w = torch.cat([torch.full((len(sk),), len(ph) / max(len(sk), 1)), torch.ones(len(ph))])
    proj = nn.Linear(x.shape[1], dim, bias=bias)
    cls = nn.Linear(dim, num_classes, bias=False)
    opt = torch.optim.AdamW(list(proj.parameters()) + list(cls.parameters()), lr=1e-3, weight_decay=1e-4)
    best: tuple[float, dict[str, torch.Tensor] | None, torch.Tensor | None, int] = (-1.0, None, None, 0)
    for step in range(1, steps + 1):
        z = F.normalize(proj(x + 0.02 * torch.randn_like(x)), dim=1)
        logits = scale * z @ F.normalize(cls.weight, dim=1).T
        loss = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if val is not None and (step % eval_every == 0 or step == steps):
            m = _val_map(proj, val)
            if m > best[0]:
                state = {k: v.detach().clone() for k, v in proj.state_dict().items()}
                best = (m, state, cls.weight.detach().clone(), step)
    if best[1] is not None:
        proj.load_state_dict(best[1])
        weights, at, val_map = best[2], best[3], best[0]
    else:
        weights, at, val_map = cls.weight.detach().clone(), steps, float("nan")
    return proj.eval(), weights, {"val_mAP@all": val_map, "step": at, "loss": float(loss.item())}


@torch.no_grad()
def init_head_from_probe(
    model: nn.Module, proj: nn.Linear, class_weights: torch.Tensor, features: np.ndarray | None = None
) -> dict[str, float]:
    """Copy a bias-free :func:`fit_probe` projection into ``model.hashing`` and its class weights into the
    cosine classifier, and refit ``model.kd_head`` by least squares so that KD head o hashing keeps its map
    to ImageNet logits: over ``features`` (rows [N, C], the training features: the fit is best where the
    data lies) or, without them, over every feature direction equally. Returns ``{"kd_fit_rel_error"}``,
    the relative error of the refitted map on those points (0 when the new code spans the old one).
    """
    if getattr(model, "classifier_scale", None) is None:
        raise ValueError(
            "head_init='probe' needs the cosine classifier (classifier_scale > 0): the probe is a cosine "
            "classifier, and the released linear classifier on the raw code would not match its scale."
        )
    if proj.bias is not None:
        raise ValueError("init_head_from_probe: fit the probe with bias=False (hashing reads f, not f/|f|)")
    h_old, k_old = model.hashing.weight.detach().double(), model.kd_head.weight.detach().double()
    h_new = proj.weight.detach().double().to(h_old.device)
    if h_new.shape != h_old.shape or class_weights.shape != model.classifier.weight.shape:
        raise ValueError(
            f"init_head_from_probe: probe {tuple(h_new.shape)} / classes {tuple(class_weights.shape)} do not "
            f"match the model's hashing {tuple(h_old.shape)} / classifier "
            f"{tuple(model.classifier.weight.shape)}"
        )
    points = torch.eye(h_old.shape[1], dtype=torch.float64, device=h_old.device)
    if features is not None:
        points = torch.as_tensor(features, dtype=torch.float64, device=h_old.device)
    target = points @ h_old.T @ k_old.T  # [N, 1000]: the ImageNet logits (less the bias) the KD head gave
    codes = points @ h_new.T  # [N, d]
    k_new = torch.linalg.lstsq(codes, target).solution.T  # argmin |codes K^T - target|
    residual = torch.linalg.norm(codes @ k_new.T - target)
    error = float(residual / torch.linalg.norm(target).clamp_min(1e-12))
    kd_bias = model.kd_head.bias + model.kd_head.weight @ model.hashing.bias  # the old constant term
    model.kd_head.bias.copy_(kd_bias)
    model.kd_head.weight.copy_(k_new.to(model.kd_head.weight.dtype))
    model.hashing.weight.copy_(h_new.to(model.hashing.weight.dtype))
    model.hashing.bias.zero_()
    model.classifier.weight.copy_(class_weights.to(model.classifier.weight))
    return {"kd_fit_rel_error": error}


def probe_head(
    cfg: DSNConfig, model: nn.Module, sketches: Any, photos: Any, device: torch.device, progress: bool = False
) -> dict[str, Any]:
    """``head_init="probe"``: pooled features of every training sketch and photo (un-augmented, the model as
    built: ImageNet backbone, FiLM at identity), a bias-free probe of ``cfg.probe_steps`` steps (the last one:
    no held-out concepts are used), copied into ``model`` by :func:`init_head_from_probe`."""
    tf = eval_transform(cfg.image_size)
    feats = []
    for ds, domain in ((sketches, 0), (photos, 1)):
        x, y = encode(
            model,
            image_loader(ds, transform=tf, batch_size=64),
            domain=domain,
            device=device,
            output="features",
            normalize=True,
            progress=progress,
            desc="probe features",
        )
        feats += [x, y]
    proj, weights, info = fit_probe(
        tuple(feats),  # type: ignore[arg-type]
        model.classifier.weight.shape[0],
        cfg.hashing_dim,
        steps=cfg.probe_steps,
        scale=float(model.classifier_scale or 16.0),
        bias=False,
        seed=cfg.seed,
    )
    info.update(init_head_from_probe(model, proj, weights, np.concatenate([feats[0], feats[2]])))
    return info
