"""Argument checks shared by the quantizer and its callers (re-exported by :mod:`.quant`)."""
from __future__ import annotations

import numbers
from collections.abc import Iterable

__all__ = ["MIN_BITS", "MAX_BITS", "check_bits", "check_bit_list"]

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
