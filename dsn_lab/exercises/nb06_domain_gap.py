"""Checks for notebook 06 (domain gap): centroid distance, dispersion, MMD², nearest-neighbour agreement."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from dsn_lab.analysis import domain_gap, rbf_mmd2
from dsn_lab.exercises._check import (
    CheckResult,
    _close,
    _number,
    _result,
    _same,
    _unanswered,
)


def _gap(xs: Any, ls: Any, xp: Any, lp: Any, **options: Any) -> dict[str, float]:
    """:func:`~dsn_lab.analysis.domain_gap` on every sample given (no subsample, no permutation test)."""
    return domain_gap(xs, ls, xp, lp, max_samples=None, n_permutations=0, **options)


def _np64(x: Any) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)).astype(np.float64)


def _unit(x: Any) -> np.ndarray:
    x = _np64(x)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_centroid_distance(
    answer: float | None,
    sketch_feats: Any,
    sketch_labels: Any,
    photo_feats: Any,
    photo_labels: Any,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 06.1: the mean over classes of ``||mu^S_c - mu^P_c||`` on L2-normalised features, against
    ``domain_gap(...)["centroid_distance"]``; tolerance 1e-5 relative (float32 features by hand)."""
    ex = "06.1"
    if answer is None:
        return _unanswered(ex, "centroid_distance", strict)
    got = _number(answer)
    if got is None:
        return _result(ex, "fail", f"expected a number, got {type(answer).__name__}.", strict)
    want = _gap(sketch_feats, sketch_labels, photo_feats, photo_labels)["centroid_distance"]
    n_classes = len(set(np.asarray(sketch_labels).tolist()) & set(np.asarray(photo_labels).tolist()))
    if _close(got, want, 1e-5, 1e-6):
        return _result(ex, "pass", f"{got:.4f}, as domain_gap (mean over {n_classes} classes).", strict)
    xs, xp = _unit(sketch_feats), _unit(photo_feats)
    ls, lp = np.asarray(sketch_labels), np.asarray(photo_labels)
    shared = sorted(set(ls.tolist()) & set(lp.tolist()))
    gaps = [xs[ls == c].mean(0) - xp[lp == c].mean(0) for c in shared]
    slips = {
        "squared distances: take the norm, not its square": float(np.mean([(d * d).sum() for d in gaps])),
        "the distance between the two domains' overall means: one centroid per class and domain": float(
            np.linalg.norm(xs.mean(0) - xp.mean(0))
        ),
        "raw features: L2-normalise each feature first": _gap(
            sketch_feats, sketch_labels, photo_feats, photo_labels, normalize=False
        )["centroid_distance"],
    }
    hint = next((f" Looks like {what}." for what, v in slips.items() if _close(got, v, 1e-5, 1e-6)), "")
    return _result(ex, "fail", f"{got:.6g}, domain_gap gives {want:.6g}.{hint}", strict)


def check_dispersion(
    answer: Mapping[str, float] | None,
    sketch_feats: Any,
    sketch_labels: Any,
    photo_feats: Any,
    photo_labels: Any,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 06.2: ``{"sketch": ..., "photo": ...}`` mean distance to the class centroid (L2-normalised
    features; classes with one sample skipped, NaN when none is left), against ``domain_gap``'s
    ``sketch_dispersion`` / ``photo_dispersion``; tolerance 1e-5 relative (float32 features by hand)."""
    ex = "06.2"
    if answer is None:
        return _unanswered(ex, "dispersion", strict)
    if not isinstance(answer, Mapping) or set(answer) != {"sketch", "photo"}:
        keys = sorted(answer) if isinstance(answer, Mapping) else type(answer).__name__
        return _result(ex, "fail", f"expected a dict with keys ['photo', 'sketch'], got {keys}.", strict)
    gap = _gap(sketch_feats, sketch_labels, photo_feats, photo_labels)
    want = {"sketch": gap["sketch_dispersion"], "photo": gap["photo_dispersion"]}
    got = {d: _number(v) for d, v in answer.items()}
    off = [d for d in ("sketch", "photo") if not _same(got[d], want[d])]
    if not off:
        shown = ", ".join(f"{d} {want[d]:.4f}" for d in ("sketch", "photo"))
        why = " (NaN: no class has two sketches, so DSN's second claim cannot be measured here)"
        return _result(ex, "pass", f"{shown}{why if math.isnan(want['sketch']) else ''}.", strict)
    feats = {"sketch": (sketch_feats, sketch_labels), "photo": (photo_feats, photo_labels)}
    hints = []
    for d in off:
        x, lab = _unit(feats[d][0]), np.asarray(feats[d][1])
        per = {c: np.linalg.norm(x[lab == c] - x[lab == c].mean(0), axis=1) for c in np.unique(lab)}
        if _same(got[d], float(np.mean([v.mean() for v in per.values()]))):
            hints.append(
                f"{d}: classes with one sample count as 0 here; a single sample is its own centroid, skip it"
            )
        elif _same(
            got[d], float(np.mean([(v * v).mean() for v in per.values() if len(v) > 1] or [math.nan]))
        ):
            hints.append(f"{d}: squared distances; take the distance itself")
    parts = "; ".join(f"{d}: {got[d]!r} vs {want[d]:.6g}" for d in off)
    return _result(ex, "fail", f"{parts}.{' Looks like ' + '; '.join(hints) + '.' if hints else ''}", strict)


def check_mmd2(answer: float | None, x: Any, y: Any, *, strict: bool | None = None) -> CheckResult:
    """Exercise 06.3: the unbiased RBF MMD² between ``x`` and ``y`` with the median-heuristic bandwidth,
    against :func:`~dsn_lab.analysis.rbf_mmd2`; tolerance 1e-5 relative + 1e-6 absolute (float32 by hand).
    The median of the distances passes too (it differs from rbf_mmd2's root of the median squared distance
    only for an even number of pairs)."""
    ex = "06.3"
    if answer is None:
        return _unanswered(ex, "mmd2_by_hand", strict)
    got = _number(answer)
    if got is None:
        return _result(ex, "fail", f"expected a number, got {type(answer).__name__}.", strict)
    want, _, sigma = rbf_mmd2(x, y)
    if _close(got, want, 1e-5, 1e-6):
        return _result(
            ex,
            "pass",
            f"{got:.6f}, as rbf_mmd2 (median bandwidth sigma = {sigma:.4f}, {len(x)} + {len(y)}).",
            strict,
        )
    z = np.concatenate([_np64(x), _np64(y)])
    n = len(x)
    d2 = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2 * z @ z.T, 0.0)

    def biased(k: np.ndarray) -> float:
        return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())

    off_diag = d2[np.triu_indices(len(z), k=1)]
    # the median of the distances themselves: rbf_mmd2 takes the root of the median squared distance, the
    # same number unless the count of pairs is even (then the two middle values are averaged differently)
    alt = float(np.median(np.sqrt(off_diag)))
    if alt > 0 and _close(got, rbf_mmd2(x, y, bandwidth=alt)[0], 1e-5, 1e-6):
        return _result(
            ex,
            "pass",
            f"{got:.6f}, as rbf_mmd2 with your bandwidth {alt:.4f}, the median of the distances (rbf_mmd2: "
            f"{want:.6f} with sigma = {sigma:.4f}, the root of the median squared distance).",
            strict,
        )
    slips = {
        "the biased estimate (i = j terms kept): leave out the diagonal of k(x, x) and k(y, y)": biased(
            np.exp(-d2 / (2 * sigma**2))
        ),
        "exp(-d²/sigma²): the kernel is exp(-d²/(2 sigma²))": rbf_mmd2(x, y, bandwidth=sigma / math.sqrt(2))[
            0
        ],
        "sigma = the median squared distance: take the median distance": rbf_mmd2(
            x, y, bandwidth=max(float(np.median(off_diag)), 1e-12)
        )[0],
        "the median over all pairs, i = j included: use distinct pairs only": rbf_mmd2(
            x, y, bandwidth=max(float(np.sqrt(np.median(d2))), 1e-12)
        )[0],
    }
    hint = next((f" Looks like {what}." for what, v in slips.items() if _close(got, v, 1e-5, 1e-6)), "")
    return _result(ex, "fail", f"{got:.6g}, rbf_mmd2 gives {want:.6g} (sigma = {sigma:.4f}).{hint}", strict)


def check_nn_agreement(
    answer: float | None,
    sketch_feats: Any,
    sketch_labels: Any,
    photo_feats: Any,
    photo_labels: Any,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 06.4: the share of sketches whose nearest photo (Euclidean, L2-normalised features) has
    their class, against ``domain_gap(...)["cross_domain_nn_agreement"]``; tolerance 1e-9."""
    ex = "06.4"
    if answer is None:
        return _unanswered(ex, "nn_agreement", strict)
    got = _number(answer)
    if got is None:
        return _result(ex, "fail", f"expected a number, got {type(answer).__name__}.", strict)
    want = _gap(sketch_feats, sketch_labels, photo_feats, photo_labels)["cross_domain_nn_agreement"]
    n = len(np.asarray(sketch_labels))
    if _close(got, want, 0.0, 1e-9):
        shown = f"{round(got * n)} of {n} sketches find their class first"
        return _result(ex, "pass", f"{got:.4f}: {shown}.", strict)
    hint = ""
    if _close(got, round(want * n), 0.0, 1e-9) and n > 1:
        hint = " That is a count: divide by the number of sketches."
    elif _close(got, 1 - want, 0.0, 1e-9):
        hint = " That is the share whose nearest photo has another class."
    return _result(ex, "fail", f"{got:.6g}, domain_gap gives {want:.6g}.{hint}", strict)
