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
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsn_lab.checkpoint import load_trained_model
from dsn_lab.config import DSNConfig
from dsn_lab.data.batching import PairedLoader, paired_loader_from_config
from dsn_lab.data.datasets import read_list_file
from dsn_lab.data.emojisketch import NOT_NEAR_DUPLICATES, _phrase_in, read_manifest, sketchy_terms
from dsn_lab.losses import SupConLoss
from dsn_lab.selection import training_sets
from dsn_lab.step import TERMS, dsn_losses, lr_factor

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
