"""Checks for notebook 01 (data preparation): class sizes, near-duplicate names, sketch positives."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dsn_lab.data.batching import PairedLoader
from dsn_lab.data.datasets import read_list_file
from dsn_lab.data.emojisketch import NOT_NEAR_DUPLICATES, _phrase_in, read_manifest, sketchy_terms
from dsn_lab.exercises._check import (
    CheckResult,
    _as_float,
    _close,
    _result,
    _unanswered,
)


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
