"""Checks for the notebooks' exercises: each compares a student's answer with what the package computes.

An exercise in a notebook is a markdown cell (the task), a code cell tagged ``exercise`` whose skeleton sets
the answer variable to ``None`` (``# YOUR CODE HERE``), and a check cell calling one ``check_*`` below. A
check returns a :class:`CheckResult` that Jupyter shows as one line: ``✓`` (within the stated tolerance),
``✗`` (what is off, and a hint where a common slip is recognised) or "not answered yet" for ``None``.

By default a check never raises, so a notebook with unanswered exercises still runs top to bottom (CI runs
them that way). ``strict=True``, or the environment variable ``DSN_LAB_EXERCISES_STRICT=1``, turns anything
but ``✓`` into an :class:`ExerciseError`: the solutions (``notebooks/solutions/``) are run that way in CI, so
a wrong solution fails.

Helpers give an exercise its inputs the way training builds them (:func:`load_run_and_batch`,
:func:`supcon_inputs`). This module sits at the top of the package, beside ``course``: nothing imports it.

Why this module is long: one check per exercise of the course, grouped by notebook (sections below), all
sharing the result and strict-mode helpers above; a notebook's check cells then import one module, and
a reader finds every check of the course in one file.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsn_lab.analysis import domain_gap, rbf_mmd2
from dsn_lab.checkpoint import load_trained_model
from dsn_lab.config import DSNConfig
from dsn_lab.data.batching import PairedLoader, paired_loader_from_config
from dsn_lab.data.datasets import read_list_file
from dsn_lab.data.emojisketch import NOT_NEAR_DUPLICATES, _phrase_in, read_manifest, sketchy_terms
from dsn_lab.losses import SupConLoss
from dsn_lab.memory import SketchMemory
from dsn_lab.metrics import ITQ, evaluate_retrieval, rank_gallery
from dsn_lab.selection import training_sets
from dsn_lab.step import TERMS, dsn_losses, dsn_step, lr_factor

STRICT_ENV = "DSN_LAB_EXERCISES_STRICT"


class ExerciseError(AssertionError):
    """A check failed (or was not answered) in strict mode."""


@dataclass(frozen=True, repr=False)
class CheckResult:
    """``status``: "pass", "fail" or "unanswered"; ``message``: the line shown. Truthy only when passed."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == "pass"

    def __repr__(self) -> str:  # what a check cell shows
        return self.message

    __str__ = __repr__


def _strict(strict: bool | None) -> bool:
    if strict is not None:
        return bool(strict)
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def _result(exercise: str, status: str, text: str, strict: bool | None) -> CheckResult:
    mark = {"pass": "✓", "fail": "✗", "unanswered": "…"}[status]
    res = CheckResult(exercise, status, f"{mark} Exercise {exercise}: {text}")
    if status != "pass" and _strict(strict):
        raise ExerciseError(f"{res.message} (strict mode: every exercise must pass)")
    return res


def _unanswered(exercise: str, variable: str, strict: bool | None) -> CheckResult:
    return _result(
        exercise, "unanswered", f"not answered yet: set `{variable}` in the exercise cell above.", strict
    )


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b)


def _as_float(x: Any) -> float:
    return float(x.detach().item()) if isinstance(x, Tensor) else float(x)


def _floats(answer: Any) -> list[float] | None:
    try:
        if isinstance(answer, Tensor):
            return [float(v) for v in answer.detach().reshape(-1).tolist()]
        return [_as_float(v) for v in answer]
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------
# 01 · data
# ---------------------------------------------------------------------------------------------------
def _class_names(root: Path, split: str) -> list[str]:
    """EmojiSketch's ``splits/classes_<split>.txt``: one name per line, the label is the line number."""
    text = (Path(root) / "splits" / f"classes_{split}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _split_files(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    return _class_names(root, split), read_list_file(Path(root) / "splits" / f"photo_{split}.txt")


def check_photos_per_class(
    answer: Mapping[str, int] | None,
    root: str | os.PathLike[str],
    split: str = "zero",
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 01.1: ``{class name: photos}`` of ``split``, against the split's list files (exact)."""
    ex = "01.1"
    if answer is None:
        return _unanswered(ex, "photos_per_class", strict)
    if not isinstance(answer, Mapping):
        return _result(
            ex, "fail", f"expected a dict {{class name: photos}}, got {type(answer).__name__}.", strict
        )
    classes, items = _split_files(Path(root), split)
    expected = dict.fromkeys(classes, 0)
    for _, label in items:
        expected[classes[label]] += 1
    got = {str(k): v for k, v in answer.items()}
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    wrong = [f"{c}: {got[c]} (expected {n})" for c, n in expected.items() if c in got and got[c] != n]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} classes missing (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} names that are not {split} classes (e.g. {extra[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} counts off: {'; '.join(wrong[:3])}")
        sketch_counts = wrong and all(got[c] == 1 for c in expected if c in got and got[c] != expected[c])
        hint = " Those look like sketch counts: count the photo dataset's labels." if sketch_counts else ""
        return _result(ex, "fail", "; ".join(parts) + "." + hint, strict)
    total = sum(expected.values())
    counted = ((read_manifest(root) or {}).get("counts") or {}).get(split, {}).get("photo")
    also = f" and with manifest.json ({counted})" if counted == total else ""
    low = min(expected, key=expected.get)
    return _result(
        ex,
        "pass",
        f"{len(expected)} classes, {total} photos: agrees with splits/photo_{split}.txt{also}. Fewest: "
        f"{low} ({expected[low]}).",
        strict,
    )


def _pair(p: Any) -> tuple[str, str]:
    a, b = p
    return str(a).strip().replace(" ", "_"), str(b).strip().replace(" ", "_")


def name_overlaps(root: str | os.PathLike[str], split: str = "train") -> set[tuple[str, str]]:
    """``(class of split, unseen class)`` pairs where the class's name contains, as whole words (a plural
    ``s`` allowed), a name the unseen class goes by (:func:`~dsn_lab.data.emojisketch.sketchy_terms`): the
    name rule of EmojiSketch's near-duplicate exclusion, applied to the built class lists."""
    seen, unseen = _class_names(Path(root), split), _class_names(Path(root), "zero")
    terms = {z: sketchy_terms(z) for z in unseen}
    return {(c, z) for c in seen for z in unseen if any(_phrase_in(t, c.replace("_", " ")) for t in terms[z])}


def check_name_overlaps(
    answer: Iterable[tuple[str, str]] | None, root: str | os.PathLike[str], *, strict: bool | None = None
) -> CheckResult:
    """Exercise 01.2: the (training class, unseen class) pairs of the name rule (:func:`name_overlaps`)."""
    ex = "01.2"
    if answer is None:
        return _unanswered(ex, "name_overlaps", strict)
    try:
        got = {_pair(p) for p in answer}
    except (TypeError, ValueError):
        return _result(ex, "fail", "expected a set of (training class, unseen class) pairs.", strict)
    expected = name_overlaps(root)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        parts = [f"{len(missing)} pairs missing (e.g. {missing[:3]})"] if missing else []
        parts += [f"{len(extra)} pairs the rule does not give (e.g. {extra[:3]})"] if extra else []
        hint = " Match whole words (a plural 's' allowed): 'ant' is not in 'elephant'."
        return _result(ex, "fail", "; ".join(parts) + "." + hint, strict)
    allowed = sorted(c for c, _ in expected if c.replace("_", " ") in NOT_NEAR_DUPLICATES)
    why = (
        f" {len(allowed)} of them are on the builder's allow list (NOT_NEAR_DUPLICATES: homonyms such as "
        "computer mouse vs mouse), which is why they still train."
        if allowed
        else ""
    )
    return _result(ex, "pass", f"the name rule gives exactly these {len(expected)} pairs.{why}", strict)


def sketch_positive_fraction(loader: PairedLoader, n_batches: int) -> float:
    """Fraction of the sketches of the first ``n_batches`` batches that have a photo of their class in the
    same batch (a positive for SupCon and the memory bank)."""
    hits = total = 0
    for _, batch in zip(range(n_batches), loader):
        photos = set(batch["photo_label"].tolist())
        labels = batch["sketch_label"].tolist()
        hits += sum(label in photos for label in labels)
        total += len(labels)
    return hits / max(total, 1)


def check_sketch_positives(
    answer: Mapping[str, float] | None,
    loaders: Mapping[str, PairedLoader],
    n_batches: int,
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 01.3: ``{sampler: fraction of sketches with a photo of their class in the batch}`` over the
    first ``n_batches`` batches of each loader (same seed and epoch, same batches); tolerance 1e-9."""
    ex = "01.3"
    if answer is None:
        return _unanswered(ex, "positive_fraction", strict)
    if not isinstance(answer, Mapping) or set(answer) != set(loaders):
        keys = sorted(answer) if isinstance(answer, Mapping) else type(answer).__name__
        return _result(ex, "fail", f"expected a dict with keys {sorted(loaders)}, got {keys}.", strict)
    off, shown = [], []
    for name, loader in loaders.items():
        want, got = sketch_positive_fraction(loader, n_batches), _as_float(answer[name])
        shown.append(f"{name} {want:.2f}")
        if not _close(got, want, 0.0, 1e-9):
            off.append(f"{name}: {got:.4g}, expected {want:.4g}")
    if off:
        return _result(
            ex, "fail", "; ".join(off) + f" (over {n_batches} batches, sketches counted one by one).", strict
        )
    return _result(ex, "pass", f"{', '.join(shown)} over {n_batches} batches.", strict)


# ---------------------------------------------------------------------------------------------------
# 03 · training
# ---------------------------------------------------------------------------------------------------
def load_run_and_batch(
    checkpoint: str | os.PathLike[str],
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, DSNConfig, dict[str, Any]]:
    """(trained model in eval mode, its config, one training batch built as the trainer builds them), from
    the run's data (``cfg.data_root``, or ``data_root`` when given)."""
    model, cfg, _ = load_trained_model(checkpoint, device)
    root = data_root if data_root is not None else cfg.data_root
    data = training_sets(cfg, Path(root) if root else None, verbose=False)
    loader = paired_loader_from_config(cfg, data["sketch"], data["photo"], seed=seed)
    return model, cfg, next(iter(loader))


def _ce_only(cfg: DSNConfig) -> DSNConfig:
    return cfg.replace(use_kd=False, use_memory=False, use_contrastive=False)


def _in_eval(model: nn.Module, fn: Any) -> Any:
    was = model.training
    model.eval()  # BatchNorm on running statistics: the value does not depend on what else is in the batch
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was)


def check_logged_total(
    answer: float | None, row: Mapping[str, Any], cfg: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.1: the total of a logged step row from its ``loss_<term>`` columns and ``cfg.w_<term>``,
    against the ``loss`` train logged; tolerance 1e-4 relative (the log holds float32 means)."""
    ex = "03.1"
    if answer is None:
        return _unanswered(ex, "total_by_hand", strict)
    logged = float(row["loss"])
    present = [k for k in TERMS if f"loss_{k}" in row]
    got = _as_float(answer)
    if _close(got, logged, 1e-4, 1e-6):
        weights = ", ".join(f"{getattr(cfg, f'w_{k}'):g} × {k}" for k in present)
        return _result(ex, "pass", f"{got:.4f} = {weights}, as train logged ({logged:.4f}).", strict)
    plain = sum(float(row[f"loss_{k}"]) for k in present)
    hint = ""
    if _close(got, plain, 1e-4, 1e-6):
        hint = " That is the unweighted sum: weight each term by cfg.w_<term>."
    return _result(ex, "fail", f"{got:.6g}, but train logged {logged:.6g} (terms: {present}).{hint}", strict)


def check_ce_term(
    answer: Any, model: nn.Module, batch: Mapping[str, Any], cfg: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.2: CE over the un-augmented sketches and photos by hand, against ``dsn_losses(...)["ce"]``
    (model in eval mode); tolerance 1e-4 absolute + 1e-4 relative."""
    ex = "03.2"
    if answer is None:
        return _unanswered(ex, "ce_by_hand", strict)
    got = _as_float(answer)
    want = _as_float(_in_eval(model, lambda: dsn_losses(model, dict(batch), _ce_only(cfg))["ce"]))
    if _close(got, want, 1e-4, 1e-4):
        return _result(ex, "pass", f"{got:.4f}, the CE term of dsn_losses ({want:.4f}).", strict)
    hints = _in_eval(model, lambda: _ce_slips(model, batch))
    hint = next((f" Looks like {what}." for what, v in hints.items() if _close(got, v, 1e-4, 1e-4)), "")
    return _result(ex, "fail", f"{got:.6g}, dsn_losses gives {want:.6g}.{hint}", strict)


def _ce_slips(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, float]:
    """CE values of the usual mistakes: one domain only, or the domain flags swapped."""
    dev = next(model.parameters()).device
    sk, ph = batch["sketch"].to(dev), batch["photo"].to(dev)
    ls, lp = batch["sketch_label"].to(dev), batch["photo_label"].to(dev)
    s, p = len(sk), len(ph)
    x, y = torch.cat([sk, ph]), torch.cat([ls, lp])
    dom = torch.cat([torch.zeros(s), torch.ones(p)]).to(dev)[:, None]
    swapped = F.cross_entropy(model(x, 1 - dom)[0], y)
    return {
        "the sketches only (add the photos)": float(F.cross_entropy(model(sk, dom[:s])[0], ls)),
        "the photos only (add the sketches)": float(F.cross_entropy(model(ph, dom[s:])[0], lp)),
        "the domain flags swapped (0 is sketch, 1 is photo)": float(swapped),
    }


def supcon_inputs(model: nn.Module, batch: Mapping[str, Any], cfg: DSNConfig) -> tuple[Tensor, Tensor]:
    """(features ``[N, views, D]``, labels ``[N]``) that SupCon sees in :func:`dsn_lab.step.dsn_step`: the
    L2-normalised hashing codes of the augmented views, sketches and photos together (eval, no gradient)."""

    def run() -> tuple[Tensor, Tensor]:
        dev = next(model.parameters()).device
        s, p = len(batch["sketch"]), len(batch["photo"])
        dom = torch.cat([torch.zeros(s), torch.ones(p)]).to(dev)[:, None]
        codes = []
        for sk, ph in zip(batch["sketch_views"], batch["photo_views"], strict=True):
            z = model(torch.cat([sk, ph]).to(dev), dom)[2]
            if cfg.contrastive_dim is not None:
                z = getattr(model, "module", model).projection(z)
            codes.append(F.normalize(z.float(), dim=1))
        labels = torch.cat([batch["sketch_label"], batch["photo_label"]]).to(dev)
        return torch.stack(codes, dim=1), labels

    return _in_eval(model, run)


def check_temperature_sweep(
    answer: Sequence[float] | None,
    features: Tensor,
    labels: Tensor,
    temperatures: Sequence[float],
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 03.3: one SupCon value per temperature (``base_temperature`` 0.07, as in training), against
    :class:`~dsn_lab.losses.SupConLoss`; tolerance 1e-4 relative."""
    ex = "03.3"
    if answer is None:
        return _unanswered(ex, "sweep", strict)
    got = _floats(answer)
    if got is None or len(got) != len(temperatures):
        n = "?" if got is None else len(got)
        return _result(
            ex, "fail", f"expected {len(temperatures)} numbers (one per temperature), got {n}.", strict
        )
    with torch.no_grad():
        want = [float(SupConLoss(t, 0.07)(features, labels)) for t in temperatures]
        plain = [float(SupConLoss(t, t)(features, labels)) for t in temperatures]
    off = [
        f"T={t}: {g:.4g} vs {w:.4g}"
        for t, g, w in zip(temperatures, got, want)
        if not _close(g, w, 1e-4, 1e-6)
    ]
    if off:
        hint = ""
        if all(_close(g, w, 1e-4, 1e-6) for g, w in zip(got, plain)):
            hint = " These are with base_temperature = T: keep base_temperature=0.07 (the T/0.07 factor)."
        return _result(ex, "fail", f"{len(off)} values off: {'; '.join(off[:3])}.{hint}", strict)
    best = temperatures[min(range(len(want)), key=want.__getitem__)]
    return _result(
        ex,
        "pass",
        f"all {len(want)} values match SupConLoss (lowest at T={best}, training uses 0.07).",
        strict,
    )


def check_lr_schedule(
    answer: Sequence[float] | None, cfg: DSNConfig, total_steps: int, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 03.4: the lr multiplier at optimiser steps ``0 .. total_steps`` (step progress only, no time
    budget), against :func:`dsn_lab.step.lr_factor`; tolerance 1e-6 absolute."""
    ex = "03.4"
    if answer is None:
        return _unanswered(ex, "lr_by_hand", strict)
    got = _floats(answer)
    want = [lr_factor(cfg, 0, k, total_steps) for k in range(total_steps + 1)]
    if got is None or len(got) != len(want):
        n = "?" if got is None else len(got)
        return _result(ex, "fail", f"expected {len(want)} values (steps 0..{total_steps}), got {n}.", strict)
    off = [k for k, (g, w) in enumerate(zip(got, want)) if not _close(g, w, 0.0, 1e-6)]
    if off:
        k = off[0]
        hint = ""
        if all(_close(g, w * cfg.lr, 1e-6, 1e-12) for g, w in zip(got, want)):
            hint = " Those are learning rates: give the multiplier (divide by cfg.lr)."
        return _result(
            ex,
            "fail",
            f"{len(off)} steps off, first at step {k}: {got[k]:.6g} vs {want[k]:.6g}.{hint}",
            strict,
        )
    return _result(
        ex,
        "pass",
        f"{len(want)} values match lr_factor ({cfg.lr_schedule}: {want[0]:.2f} at step 0, "
        f"{want[len(want) // 2]:.2f} half-way, {want[-1]:.2f} at the end).",
        strict,
    )


# ---------------------------------------------------------------------------------------------------
# 04 · evaluation
# ---------------------------------------------------------------------------------------------------
def _number(answer: Any) -> float | None:
    try:
        return _as_float(answer)
    except (TypeError, ValueError):
        return None


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


# ---------------------------------------------------------------------------------------------------
# 06 · domain gap
# ---------------------------------------------------------------------------------------------------
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


def _same(a: float | None, b: float) -> bool:
    if a is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or _close(a, b, 1e-5, 1e-9)


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


# ---------------------------------------------------------------------------------------------------
# 02 · model and losses
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# 00 · setup, 05 · ablations, 07 · retrieval explorer
# ---------------------------------------------------------------------------------------------------
def _named_values(answer: Any, names: Sequence[str], ex: str, what: str, strict: bool | None) -> Any:
    """``answer`` as a dict over exactly ``names``, or the fail result saying what was expected."""
    if isinstance(answer, Mapping) and set(answer) == set(names):
        return dict(answer)
    got = sorted(map(str, answer)) if isinstance(answer, Mapping) else type(answer).__name__
    return _result(ex, "fail", f"expected a dict {{{what}}} with keys {sorted(names)}, got {got}.", strict)


def check_quirk_in_force(
    answer: Mapping[str, Any] | None,
    configs: Mapping[str, DSNConfig],
    name: str = "head_bias",
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 00.1: ``{config name: value of quirk name in force}``, against ``cfg.quirk(name)``."""
    ex = "00.1"
    if answer is None:
        return _unanswered(ex, "in_force", strict)
    got = _named_values(answer, list(configs), ex, "config name: value", strict)
    if isinstance(got, CheckResult):
        return got
    want = {k: cfg.quirk(name) for k, cfg in configs.items()}
    off = [f"{k}: {got[k]!r} (expected {want[k]!r})" for k in want if got[k] != want[k]]
    if off:
        hint = ""
        if any(got[k] == getattr(cfg, name) != want[k] for k, cfg in configs.items()):
            hint = f" That is the raw field: None follows faithful (QUIRKS['{name}'] = (released, fixed))."
        elif any(getattr(cfg, name) is not None and got[k] != want[k] for k, cfg in configs.items()):
            hint = " An explicit value wins over faithful."
        return _result(ex, "fail", "; ".join(off) + "." + hint, strict)
    return _result(ex, "pass", "; ".join(f"{k} {v!r}" for k, v in want.items()) + ".", strict)


class _CountingModel(nn.Module):
    """A stand-in network for :func:`images_per_step`: records how many images each forward pass gets."""

    def __init__(self, n_classes: int = 2, dim: int = 4) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dim))
        self.n_classes, self.seen = n_classes, 0

    def forward(self, x: Tensor, dom: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self.seen += len(x)
        h = x.flatten(1).mean(1, keepdim=True) + dom * self.w  # [N, dim], depends on the domain flag
        return h[:, : self.n_classes], h[:, : self.n_classes], h, h


def images_per_step(cfg: DSNConfig) -> int:
    """Images the student network processes in one training step of ``cfg``: :func:`dsn_step`'s forward
    pass, counted on a 1-pixel batch shaped as ``cfg``'s loader builds it (the teacher's pass not counted)."""
    s, p = cfg.sketches_per_batch, cfg.photos_per_batch
    img = {"sketch": torch.zeros(s, 3, 1, 1), "photo": torch.zeros(p, 3, 1, 1)}
    batch = {
        **img,
        "sketch_label": torch.arange(s) % 2,
        "photo_label": torch.arange(p) % 2,
        **{f"{k}_views": [img[k].clone() for _ in range(cfg.augment_views)] for k in img},
    }
    model = _CountingModel()
    dsn_step(model, batch, cfg.replace(use_kd=False, use_memory=False, contrastive_dim=None))
    return model.seen


def check_images_per_step(
    answer: Mapping[str, int] | None, configs: Mapping[str, DSNConfig], *, strict: bool | None = None
) -> CheckResult:
    """Exercise 00.2: ``{config name: images per training step}``, against :func:`images_per_step`."""
    ex = "00.2"
    if answer is None:
        return _unanswered(ex, "images", strict)
    got = _named_values(answer, list(configs), ex, "config name: images", strict)
    if isinstance(got, CheckResult):
        return got
    want = {k: images_per_step(cfg) for k, cfg in configs.items()}
    off = [f"{k}: {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
    if off:
        hints = []
        for k, cfg in configs.items():
            s_p = cfg.sketches_per_batch + cfg.photos_per_batch
            if got[k] == s_p * (1 + cfg.augment_views) != want[k]:
                hints.append(f"{k} trains without SupCon: its augmented views are not computed")
            elif got[k] in (s_p * cfg.augment_views, s_p) and got[k] != want[k]:
                hints.append(f"{k}: each image goes through once plain and augment_views times augmented")
        return _result(
            ex, "fail", "; ".join(off) + "." + (" " + "; ".join(hints) + "." if hints else ""), strict
        )
    return _result(
        ex, "pass", "; ".join(f"{k} {v}" for k, v in want.items()) + " (counted in dsn_step).", strict
    )


def _quirks_differ(a: DSNConfig, b: DSNConfig) -> set[str]:
    qa, qb = a.quirks(), b.quirks()
    return {k for k in qa if qa[k] != qb[k]}


def _names(answer: Any) -> set[str] | None:
    if isinstance(answer, str):
        return None
    try:
        return {str(x) for x in answer}
    except TypeError:
        return None


def _set_result(
    ex: str, got: set[str], want: set[str], hint: str, shown: str, strict: bool | None
) -> CheckResult:
    if got != want:
        parts = [f"missing {sorted(want - got)}"] if want - got else []
        parts += [f"not expected {sorted(got - want)}"] if got - want else []
        return _result(ex, "fail", "; ".join(parts) + "." + hint, strict)
    return _result(ex, "pass", shown, strict)


def check_quirks_differ(
    answer: Iterable[str] | None, a: DSNConfig, b: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 00.3: the fidelity fields whose value *in force* differs between ``a`` and ``b``
    (``cfg.quirks()``), not the raw fields ``cfg.diff`` lists."""
    ex = "00.3"
    if answer is None:
        return _unanswered(ex, "behaviours", strict)
    got = _names(answer)
    if got is None:
        return _result(ex, "fail", "expected a set of field names.", strict)
    want, raw = _quirks_differ(a, b), set(a.diff(b))
    hint = (
        " Those are the raw fields (cfg.diff): compare what each run does, cfg.quirks()."
        if got == raw
        else ""
    )
    shown = f"{len(want)} behaviours differ, from {len(raw)} raw fields ({sorted(raw)})."
    return _set_result(ex, got, want, hint, shown, strict)


def seed_stats(runs: Any, metric: str = "mAP@all") -> Any:
    """Mean and sample std (NaN for one seed) of ``metric`` per run of a :func:`~dsn_lab.course.run_ablations`
    frame, as :func:`~dsn_lab.course.ablation_table` computes them (course sits beside this module)."""
    return runs.groupby("run", sort=False)[metric].agg(["mean", "std"])


def check_ablation_stats(
    answer: Mapping[str, Sequence[float]] | None,
    runs: Any,
    metric: str = "mAP@all",
    *,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 05.1: ``{run: (mean, std)}`` of ``metric`` over seeds, by hand from ``runs``, against
    :func:`seed_stats`, i.e. ``ablation_table`` (tolerance 1e-9; std NaN for one seed)."""
    ex = "05.1"
    if answer is None:
        return _unanswered(ex, "stats", strict)
    table = seed_stats(runs, metric)
    got = _named_values(answer, list(table.index), ex, "run: (mean, std)", strict)
    if isinstance(got, CheckResult):
        return got
    off, ddof0 = [], False
    for run, row in table.iterrows():
        pair = _floats(got[run])
        if pair is None or len(pair) != 2:
            off.append(f"{run}: expected (mean, std)")
            continue
        std_ok = _same(pair[1], float(row["std"]))
        if _close(pair[0], float(row["mean"]), 1e-9, 1e-9) and std_ok:
            continue
        values = runs.loc[runs["run"] == run, metric].to_numpy(dtype=np.float64)
        ddof0 = ddof0 or _close(pair[1], float(values.std()), 1e-9, 1e-9)
        off.append(f"{run}: ({pair[0]:.4f}, {pair[1]:.4f}), expected ({row['mean']:.4f}, {row['std']:.4f})")
    if off:
        hint = (
            " The std is the sample std (ddof=1, pandas' default): NaN for one seed, not 0." if ddof0 else ""
        )
        return _result(ex, "fail", "; ".join(off[:3]) + "." + hint, strict)
    n = sorted(set(runs.groupby("run")["seed"].nunique()))
    return _result(ex, "pass", f"as ablation_table for {len(table)} runs (seeds per run: {n}).", strict)


def check_best_term(
    answer: str | None,
    table: Any,
    baseline: str = "SAKE baseline (CE+KD)",
    candidates: Sequence[str] = ("+ contrastive", "+ memory"),
    metric: str = "mAP@all",
    *,
    predicted: str | None = None,
    strict: bool | None = None,
) -> CheckResult:
    """Exercise 05.2: the row of ``candidates`` whose mean ``metric`` gains most over ``baseline`` in
    ``table`` (:func:`~dsn_lab.course.ablation_table`'s frame); any of tied rows passes."""
    ex = "05.2"
    if answer is None:
        return _unanswered(ex, "helps_most", strict)
    mean = table[(metric, "mean")] if (metric, "mean") in table.columns else table[metric]
    gains = {c: float(mean[c] - mean[baseline]) for c in candidates}
    shown = ", ".join(f"{c} {g:+.4f}" for c, g in gains.items())
    if not isinstance(answer, str) or answer not in gains:
        return _result(ex, "fail", f"expected one of {list(candidates)}, got {answer!r}.", strict)
    best = max(gains.values())
    guess = (
        f" Your prediction {predicted!r}: {'right' if predicted == answer else 'wrong'}." if predicted else ""
    )
    if not _close(gains[answer], best, 0.0, 1e-12):
        return _result(
            ex, "fail", f"{answer} gains {gains[answer]:+.4f}; gains over {baseline}: {shown}.", strict
        )
    return _result(ex, "pass", f"{answer}; gains in {metric} over {baseline}: {shown}.{guess}", strict)


def check_changed_fields(
    answer: Iterable[str] | None, base: DSNConfig, row: DSNConfig, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 05.3: the config fields an ablation row changes, against ``base.diff(row)``; the pass
    line shows what they resolve to (``cfg.quirk``)."""
    ex = "05.3"
    if answer is None:
        return _unanswered(ex, "changed", strict)
    got = _names(answer)
    if got is None:
        return _result(ex, "fail", "expected a set of field names.", strict)
    want = set(base.diff(row))
    hint = (
        " The row sets its fields explicitly; it does not set faithful." if "faithful" in got - want else ""
    )
    resolved = ", ".join(f"{k}: {base.quirk(k)!r} -> {row.quirk(k)!r}" for k in sorted(want))
    return _set_result(ex, got, want, hint, f"{sorted(want)}; in force {resolved}.", strict)


def _explorer_arrays(explorer: Any, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query codes, their labels, the gallery codes and labels of checkpoint ``model`` (real codes) of a
    :class:`~dsn_lab.widgets.RetrievalExplorer` or its :class:`~dsn_lab.widgets.Explorer`."""
    exp = getattr(explorer, "explorer", explorer)
    fs = exp.sets[model]
    return fs.query_codes(False), exp.query_labels, fs.gallery, exp.gallery_labels


def check_wrong_top1(
    answer: int | None, explorer: Any, model: str = "DSN", *, strict: bool | None = None
) -> CheckResult:
    """Exercise 07.1: a test sketch whose nearest photo (``rank_gallery``, real codes, as the explorer
    ranks) is of another class."""
    ex = "07.1"
    if answer is None:
        return _unanswered(ex, "wrong_query", strict)
    q, ql, g, gl = _explorer_arrays(explorer, model)
    if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)) or not 0 <= answer < len(q):
        return _result(ex, "fail", f"expected a query index in [0, {len(q)}), got {answer!r}.", strict)
    top = int(np.asarray(rank_gallery(q[int(answer)], g, topk=1))[0])
    names = getattr(getattr(explorer, "explorer", explorer), "classes", None)
    cls = (lambda i: names[i]) if names else str
    said = f"query {int(answer)} ({cls(int(ql[answer]))}): the nearest photo #{top} is of {cls(int(gl[top]))}"
    if gl[top] == ql[answer]:
        return _result(ex, "fail", f"{said}, its own class: that top-1 is right.", strict)
    return _result(ex, "pass", f"{said}.", strict)


def check_first_hit_rank(
    answer: int | None, explorer: Any, query: int, model: str = "DSN", *, strict: bool | None = None
) -> CheckResult:
    """Exercise 07.2: the 1-based rank of the first photo of the query's class in ``rank_gallery``'s
    ranking of the whole gallery (exact)."""
    ex = "07.2"
    if answer is None:
        return _unanswered(ex, "first_hit", strict)
    q, ql, g, gl = _explorer_arrays(explorer, model)
    order = np.asarray(rank_gallery(q[int(query)], g))
    want = int(np.flatnonzero(gl[order] == ql[int(query)])[0]) + 1
    got = _number(answer)
    if got != want:
        hint = " Ranks start at 1 (the nearest photo is rank 1)." if got == want - 1 else ""
        return _result(ex, "fail", f"rank {answer}, expected {want}.{hint}", strict)
    return _result(
        ex, "pass", f"query {int(query)}: the first right photo at rank {want} of {len(g)}.", strict
    )


def check_top1_accuracy(
    answer: Mapping[str, float] | None, explorer: Any, *, strict: bool | None = None
) -> CheckResult:
    """Exercise 07.3: ``{checkpoint: share of test sketches whose nearest photo is of their class}``,
    against ``evaluate_retrieval(ks=(1,), average="query")``'s P@1 (tolerance 1e-9)."""
    ex = "07.3"
    if answer is None:
        return _unanswered(ex, "top1", strict)
    exp = getattr(explorer, "explorer", explorer)
    got = _named_values(answer, exp.model_names, ex, "checkpoint: share", strict)
    if isinstance(got, CheckResult):
        return got
    want = {}
    for m in exp.model_names:
        res = evaluate_retrieval(*_explorer_arrays(exp, m), ks=(1,), average="query")
        want[m] = float(res["P@1"])
    n = len(exp.query_labels)
    off = []
    for m, w in want.items():
        v = _number(got[m])
        if v is None or not _close(v, w, 1e-9, 1e-9):
            count = (
                " (a count: divide by the number of queries)"
                if v is not None and _close(v, w * n, 0, 1e-6)
                else ""
            )
            off.append(f"{m}: {got[m]!r}, expected {w:.4f}{count}")
    if off:
        return _result(ex, "fail", "; ".join(off) + ".", strict)
    return _result(
        ex, "pass", "; ".join(f"{m} {w:.4f}" for m, w in want.items()) + f" of {n} sketches.", strict
    )
