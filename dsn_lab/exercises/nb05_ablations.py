"""Checks for notebook 05 (ablations): seed statistics, the term that helps most, what a row changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dsn_lab.config import DSNConfig
from dsn_lab.exercises._check import (
    CheckResult,
    _close,
    _floats,
    _named_values,
    _names,
    _result,
    _same,
    _set_result,
    _unanswered,
)


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
