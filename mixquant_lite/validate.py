"""Argument validators shared by the package: each returns the checked value or raises
``ValueError`` / ``TypeError`` naming the argument and its accepted range.

Bit-widths are checked here (``check_bits``, ``check_bit_list``); granularities and range
methods in :mod:`mixquant_lite.quant` (``check_granularity``, ``check_range_method``).
"""
from __future__ import annotations

import argparse
import numbers
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MIN_BITS", "MAX_BITS", "check_bits", "check_bit_list",
           "check_int", "check_choice", "check_int_tuple", "check_alpha", "check_positive",
           "parse_bit_list", "parse_layer_bits", "parse_positive", "parse_act_bits"]

MIN_BITS, MAX_BITS = 1, 16



def check_bits(bits, name: str = "bits") -> int:
    """Return ``bits`` as an int after checking it is an integer in ``1..16``.

    Raises:
        TypeError: not an integer (bools and floats are refused, numpy integers accepted).
        ValueError: outside ``1..16``.
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    bits = int(bits)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{name} must be an int in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def check_bit_list(bits: Iterable[int], name: str = "bits") -> tuple[int, ...]:
    """Candidate bit-widths as a sorted tuple of ints, each checked by :func:`check_bits`.

    Raises:
        TypeError: ``bits`` is not an iterable of ints (a bare int is refused too).
        ValueError: empty, duplicated, or an entry outside ``1..16``.
    """
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Iterable):
        raise TypeError(f"{name} must be a list of ints in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    out = [check_bits(b, name) for b in bits]
    if not out:
        raise ValueError(f"{name} must not be empty")
    dup = sorted({b for b in out if out.count(b) > 1})
    if dup:
        raise ValueError(f"{name} has duplicated bit-widths {dup}")
    return tuple(sorted(out))



def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int after checking ``lo <= value (<= hi)``; bools and floats refused
    (``ValueError`` either way)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {rng}, got {v}")
    return v


def check_int_tuple(name: str, values: Iterable[Any], lo: int, hi: int | None = None
                    ) -> tuple[int, ...]:
    """A non-empty tuple of ints, each checked by :func:`check_int`."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}")
    out = tuple(check_int(name, v, lo, hi) for v in values)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` after checking it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """A level strictly between 0 and 1."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def check_positive(name: str, value: Any) -> float:
    """A positive finite number."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 < float(value) < float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- command-line types


def parse_bit_list(text: str) -> tuple[int, ...]:
    """``"2-8"`` -> ``(2, ..., 8)``; ``"2,4,8"`` and mixes like ``"2-4,8"`` work too (an
    argparse type)."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad bit-width list {text!r} (e.g. 2-8 or 2,4,8)")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise argparse.ArgumentTypeError(f"bad range {part!r}: {hi} < {lo}")
        out += range(lo, hi + 1)
    try:
        return check_bit_list(out)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_layer_bits(text: str) -> tuple[str, int]:
    """``"LAYER=BITS"`` -> ``(LAYER, BITS)`` (an argparse type)."""
    name, sep, bits = text.rpartition("=")
    if not sep or not name or not bits.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected LAYER=BITS, got {text!r}")
    return name, int(bits)


def parse_positive(text: str) -> float:
    """A positive finite number (an argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def parse_act_bits(text: str) -> tuple[int | None, ...]:
    """``"none,8"`` -> ``(None, 8)``: activation settings (an argparse type)."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("none", "off", "32", "f32", ""):
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(
                f"--act-bits takes a comma list of ints or 'none', got {text!r}")
    return tuple(out)
