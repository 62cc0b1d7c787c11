"""What every exercise check shares: the result a check cell shows, strict mode, and answer parsing.

Strict mode (``strict=True`` or ``DSN_LAB_EXERCISES_STRICT=1``) turns anything but a pass into an
:class:`ExerciseError`, so the solutions fail CI when wrong. The helpers below read a student's answer
leniently (a tensor, a NumPy scalar or a plain number) and are used by the checks of several notebooks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

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


def _number(answer: Any) -> float | None:
    try:
        return _as_float(answer)
    except (TypeError, ValueError):
        return None


def _same(a: float | None, b: float) -> bool:
    if a is None:
        return False
    return (math.isnan(a) and math.isnan(b)) or _close(a, b, 1e-5, 1e-9)


def _named_values(answer: Any, names: Sequence[str], ex: str, what: str, strict: bool | None) -> Any:
    """``answer`` as a dict over exactly ``names``, or the fail result saying what was expected."""
    if isinstance(answer, Mapping) and set(answer) == set(names):
        return dict(answer)
    got = sorted(map(str, answer)) if isinstance(answer, Mapping) else type(answer).__name__
    return _result(ex, "fail", f"expected a dict {{{what}}} with keys {sorted(names)}, got {got}.", strict)


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
