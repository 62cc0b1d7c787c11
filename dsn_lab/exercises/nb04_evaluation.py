"""Checks for notebook 04 (evaluation): one query's AP and precision, the hardest classes, ITQ's loss."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dsn_lab.exercises._check import (
    CheckResult,
    _close,
    _number,
    _result,
    _unanswered,
)
from dsn_lab.metrics import ITQ, evaluate_retrieval, rank_gallery


def _per_query(q: Any, ql: Any, g: Any, gl: Any, **options: Any) -> dict[str, Any]:
    """:func:`~dsn_lab.metrics.evaluate_retrieval` with the per-query arrays (default protocol + options)."""
    return evaluate_retrieval(q, ql, g, gl, per_query=True, **options)


def _positive_ranks(q: Any, ql: Any, g: Any, gl: Any, query: int) -> list[int]:
    """1-based ranks of the positives of ``query`` in the evaluation's ranking (ties by gallery index)."""
    order = rank_gallery(np.asarray(q)[query], np.asarray(g))
    hits = np.asarray(gl)[order] == np.asarray(ql)[query]
    return [int(r) + 1 for r in np.flatnonzero(hits)]


def check_query_ap(
    answer: float | None,
    query_feats: Any,
    query_labels: Any,
    gallery_feats: Any,
    gallery_labels: Any,
    query: int,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 04.1: the AP of query ``query`` over the whole ranking (interpolated, the AP that mAP@all
    averages), against ``evaluate_retrieval(..., per_query=True)["AP_per_query"]``; tolerance 1e-9."""
    ex = "04.1"
    if answer is None:
        return _unanswered(ex, "ap_by_hand", strict)
    got = _number(answer)
    if got is None:
        return _result(ex, "fail", f"expected a number, got {type(answer).__name__}.", strict)
    args = (query_feats, query_labels, gallery_feats, gallery_labels)
    want = float(_per_query(*args)["AP_per_query"][query])
    ranks = _positive_ranks(*args, query)
    shown = f"{ranks[:8]}{' …' if len(ranks) > 8 else ''}"
    if _close(got, want, 0.0, 1e-9):
        return _result(
            ex,
            "pass",
            f"{got:.4f}, the AP of query {query} ({len(ranks)} positives at ranks {shown}).",
            strict,
        )
    plain = float(_per_query(*args, interpolated=False)["AP_per_query"][query])
    hint = ""
    if _close(got, plain, 0.0, 1e-9):
        hint = (
            " That is the plain AP: the protocol interpolates, replacing each P(k) by the largest"
            " precision at the k-th or any later positive."
        )
    return _result(
        ex,
        "fail",
        f"{got:.6g}, evaluate_retrieval gives {want:.6g} (positives at ranks {shown}).{hint}",
        strict,
    )


def check_query_precision(
    answer: Mapping[int, float] | None,
    query_feats: Any,
    query_labels: Any,
    gallery_feats: Any,
    gallery_labels: Any,
    query: int,
    ks: Sequence[int] = (5, 100),
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 04.2: ``{K: P@K}`` of query ``query`` under the default protocol (hits in the top K over
    min(K, gallery size)), against ``evaluate_retrieval(..., ks=ks, per_query=True)``; tolerance 1e-9."""
    ex = "04.2"
    if answer is None:
        return _unanswered(ex, "p_at_k", strict)
    ks = tuple(int(k) for k in ks)
    if not isinstance(answer, Mapping) or {int(k) for k in answer} != set(ks):
        keys = sorted(answer) if isinstance(answer, Mapping) else type(answer).__name__
        return _result(ex, "fail", f"expected a dict {{K: P@K}} with keys {list(ks)}, got {keys}.", strict)
    got = {int(k): _number(v) for k, v in answer.items()}
    args = (query_feats, query_labels, gallery_feats, gallery_labels)
    res = _per_query(*args, ks=ks)
    want = {k: float(res[f"P@{k}_per_query"][query]) for k in ks}
    n_g = int(res["n_gallery"])
    off = [k for k in ks if got[k] is None or not _close(got[k], want[k], 0.0, 1e-9)]
    if not off:
        shown = ", ".join(f"P@{k} = {want[k]:.4f}" for k in ks)
        return _result(ex, "pass", f"{shown} (gallery of {n_g}: hits over min(K, {n_g})).", strict)
    positives = _per_query(*args, ks=ks, p_at_k_over="positives")
    hint = ""
    for k in off:
        if got[k] is None:
            continue
        if k > n_g and _close(got[k], want[k] * n_g / k, 0.0, 1e-9):
            hint = f" P@{k}: the gallery has only {n_g} items, so the protocol divides by min(K, {n_g})."
        elif _close(got[k], float(positives[f"P@{k}_per_query"][query]), 0.0, 1e-9):
            hint = (
                f" P@{k} divides by min(K, positives): that is ZSE-SBIR's protocol (p_at_k_over='positives'),"
                " not the default."
            )
    parts = "; ".join(f"P@{k}: {got[k]!r} vs {want[k]:.6g}" for k in off)
    return _result(ex, "fail", f"{parts}.{hint}", strict)


def _class_names_of(classes: Sequence[str], labels: Any) -> list[str]:
    return [classes[int(c)] for c in labels]


def check_hardest_classes(
    answer: Iterable[str] | None,
    query_feats: Any,
    query_labels: Any,
    gallery_feats: Any,
    gallery_labels: Any,
    classes: Sequence[str],
    k: int,
    predicted: Iterable[str] | None = None,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 04.3: the ``k`` unseen classes with the lowest mean AP (``mAP_per_class`` of
    ``evaluate_retrieval``; any choice among tied classes passes), and how many of the ``predicted`` ones
    (the guess made before the chart) are among them."""
    ex = "04.3"
    if answer is None:
        return _unanswered(ex, "hardest", strict)
    if isinstance(answer, str):
        return _result(ex, "fail", "expected a list of class names, got one string.", strict)
    res = _per_query(query_feats, query_labels, gallery_feats, gallery_labels)
    ap = dict(zip(_class_names_of(classes, res["classes"]), (float(v) for v in res["mAP_per_class"])))
    k = min(int(k), len(ap))
    try:
        got = [classes[int(c)] if not isinstance(c, str) else c for c in answer]
    except (TypeError, ValueError, IndexError):
        return _result(ex, "fail", "expected a list of class names (or class ids).", strict)
    unknown = [c for c in got if c not in ap]
    if unknown or len(set(got)) != k:
        why = f"names that are not unseen classes: {unknown[:3]}" if unknown else f"{len(set(got))} distinct"
        return _result(ex, "fail", f"expected {k} distinct unseen class names ({why}).", strict)
    ranked = sorted(ap, key=ap.get)
    cut = ap[ranked[k - 1]]  # the k-th lowest mean AP; classes tied with it are interchangeable
    ok = all(ap[c] <= cut + 1e-12 for c in got) and all(c in got for c in ranked if ap[c] < cut - 1e-12)
    expected = ", ".join(f"{c} ({ap[c]:.3f})" for c in ranked[:k])
    if not ok:
        hint = ""
        if set(got) == set(sorted(ap, key=lambda c: -ap[c])[:k]):
            hint = " Those are the easiest: the hardest have the lowest AP."
        return _result(ex, "fail", f"{sorted(got)} vs the lowest mean AP: {expected}.{hint}", strict)
    guess = ""
    pred = [str(c) for c in predicted] if predicted is not None else []
    if pred:
        right = sorted(set(pred) & set(got))
        not_classes = [c for c in pred if c not in ap]
        guess = f" Your prediction: {len(right)} of {len(pred)} among them{f' ({right})' if right else ''}."
        if not_classes:
            guess += f" Not unseen classes: {not_classes[:3]}."
    return _result(ex, "pass", f"the {k} hardest: {expected}.{guess}", strict)


def check_itq_loss(answer: float | None, itq: ITQ, feats: Any, *, strict: bool | None = None) -> CheckResult:
    """Exercise 04.4: the ITQ quantisation loss ``||B - V R||_F^2 / n`` of ``feats`` (the fit set) with the
    fitted rotation, ``V R`` = :meth:`~dsn_lab.metrics.ITQ.project` (fit-set mean), ``B`` its signs (0 ->
    +1, as the fit); tolerance 1e-5 relative (float32 features by hand)."""
    ex = "04.4"
    if answer is None:
        return _unanswered(ex, "itq_loss", strict)
    got = _number(answer)
    if got is None:
        return _result(ex, "fail", f"expected a number, got {type(answer).__name__}.", strict)
    z = itq.project(feats, center="fit").cpu().numpy()
    n = len(z)
    sq = float(((np.where(z >= 0, 1.0, -1.0) - z) ** 2).sum())
    want = sq / n
    first, last = itq.loss_history[0], itq.loss_history[-1]
    if _close(got, want, 1e-5, 1e-12):
        return _result(
            ex,
            "pass",
            f"{got:.4f} with the final rotation, from {first:.4f} at the random start "
            f"({len(itq.loss_history)} iterations, {itq.bits} bits).",
            strict,
        )
    slips = {
        "the loss before the last update (loss_history[-1]): apply the final rotation": last,
        "the sum over the codes: divide by their number n": sq,
        "divided by n × bits: divide by the number of codes n only": sq / (n * itq.bits),
    }
    hint = next((f" Looks like {what}." for what, v in slips.items() if _close(got, v, 1e-5, 1e-12)), "")
    return _result(ex, "fail", f"{got:.6g}, expected {want:.6g}.{hint}", strict)
