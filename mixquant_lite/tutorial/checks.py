"""Check cells for the notebook exercises: one line that says whether an answer is right.

A check that passes prints ``"<exercise>: passed"``; one that fails raises
:class:`ExerciseError` with what was expected, so that a student run stops at the exercise
that is not done yet (and ``make student`` versions fail exactly there).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ExerciseError", "check", "check_close", "check_equal"]


class ExerciseError(AssertionError):
    """An exercise's answer is not right (yet)."""


def check(exercise: str, ok: bool, hint: str = "") -> None:
    """Print ``"<exercise>: passed"`` if ``ok`` is true, else raise :class:`ExerciseError`
    with ``hint``."""
    if not bool(ok):
        raise ExerciseError(f"{exercise}: not yet. {hint}".rstrip())
    print(f"{exercise}: passed")


def check_close(exercise: str, got: Any, expected: Any, *, rtol: float = 1e-6,
                atol: float = 0.0) -> None:
    """:func:`check` that ``got`` equals ``expected`` elementwise within ``rtol``/``atol``
    (arrays, tensors or numbers; shapes must match)."""
    g = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got, dtype=float)
    e = np.asarray(expected.detach().cpu() if hasattr(expected, "detach") else expected,
                   dtype=float)
    if g.shape != e.shape:
        raise ExerciseError(f"{exercise}: not yet. Expected shape {e.shape}, got {g.shape}")
    bad = ~np.isclose(g, e, rtol=rtol, atol=atol)
    if bad.any():
        k = int(np.flatnonzero(bad.ravel())[0])
        raise ExerciseError(f"{exercise}: not yet. {int(bad.sum())} of {g.size} values differ; "
                            f"first at flat index {k}: got {g.ravel()[k]!r}, expected "
                            f"{e.ravel()[k]!r}")
    print(f"{exercise}: passed")


def check_equal(exercise: str, got: Any, expected: Any) -> None:
    """:func:`check` that ``got == expected`` (plain Python equality)."""
    if got != expected:
        raise ExerciseError(f"{exercise}: not yet. Expected {expected!r}, got {got!r}")
    print(f"{exercise}: passed")
