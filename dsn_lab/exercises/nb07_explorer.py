"""Checks for notebook 07 (retrieval explorer): a wrong top-1, the first hit's rank, top-1 accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dsn_lab.exercises._check import (
    CheckResult,
    _close,
    _named_values,
    _number,
    _result,
    _unanswered,
)
from dsn_lab.metrics import evaluate_retrieval, rank_gallery


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
