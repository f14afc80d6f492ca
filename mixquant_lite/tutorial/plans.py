"""Control plans for the notebooks' experiments: plans at a target average bit-width
(:func:`random_plans_at`) and plans whose average bit-width and error are decorrelated
(:func:`decorrelated_plans`), as ``{layer: bits}`` dicts."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plan_avg_bits", "decorrelated_plans", "random_plans_at"]


def _cands(bits: Iterable[int]) -> np.ndarray:
    c = np.array(sorted({int(b) for b in bits}))
    if c.size < 2 or c[0] < 1 or c[-1] > 16:
        raise ValueError(f"bits must hold at least two bit-widths in 1..16, got {list(bits)}")
    return c


def _numel_of(numel: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    if not isinstance(numel, Mapping) or not numel:
        raise TypeError("numel must be a non-empty mapping {layer: number of weights}, e.g. "
                        "QETable.numel")
    w = np.array([int(v) for v in numel.values()], dtype=np.int64)
    if (w <= 0).any():
        raise ValueError("numel must be positive for every layer")
    return list(numel), w


def _checked(numel: Mapping[str, int], n: Any, bits: Iterable[int],
             fixed: Mapping[str, int] | None) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """The arguments shared by the plan makers, checked: layers, weights, candidates, fixed."""
    layers, w = _numel_of(numel)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(layers)
    if unknown:
        raise ValueError(f"fixed names layers not in numel: {sorted(unknown)}")
    return layers, w, _cands(bits), fixed


def plan_avg_bits(plan: Mapping[str, int], numel: Mapping[str, int]) -> float:
    """Average bit-width of ``{layer: bits}``, weighted by ``numel`` (the layers of the plan)."""
    total = sum(int(numel[k]) for k in plan)
    return sum(int(numel[k]) * int(b) for k, b in plan.items()) / total


def decorrelated_plans(
    numel: Mapping[str, int],
    n: int,
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
    max_spread: float = 2.5,
    fixed: Mapping[str, int] | None = None,
    seed: int = 0,
) -> list[dict[str, int]]:
    """Random plans whose average bit-width and per-layer spread are drawn independently.

    Plan ``i`` draws a centre ``c ~ U[min(bits), max(bits)]`` and, independently, a spread
    ``s ~ U[0, max_spread]``; each layer gets the candidate nearest to ``c + s * N(0, 1)``. With
    one fixed spread (as in ``analysis.random_plans``) the total squared error is nearly a
    function of the average bit-width; an independent spread moves the error at a given
    average (a wide spread puts some layers at 2-3 bits, whose error dominates the sum), so the
    two predictors can be told apart.

    Args:
        numel: ``{layer: number of weights}`` (``QETable.numel``); plans name these layers.
        n: number of plans (>= 1).
        fixed: ``{layer: bits}`` kept as given in every plan (e.g. first and last at 8).
    """
    if not (isinstance(max_spread, numbers.Real) and 0 <= max_spread < math.inf):
        raise ValueError(f"max_spread must be a finite number >= 0, got {max_spread!r}")
    layers, _, cands, fixed = _checked(numel, n, bits, fixed)
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(int(n)):
        c = rng.uniform(cands[0], cands[-1])
        s = rng.uniform(0.0, float(max_spread))
        want = c + s * rng.standard_normal(len(layers))
        pick = np.abs(want[:, None] - cands[None, :]).argmin(1)
        plan = {k: int(cands[j]) for k, j in zip(layers, pick, strict=True)}
        plan.update({k: int(v) for k, v in fixed.items()})
        plans.append(plan)
    return plans


def random_plans_at(
    numel: Mapping[str, int],
    avg_bits: float,
    n: int,
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
    fixed: Mapping[str, int] | None = None,
    tol: float = 0.02,
    seed: int = 0,
    max_tries: int = 50,
) -> list[dict[str, int]]:
    """``n`` random plans whose average bit-width is within ``tol`` of ``avg_bits``.

    Each plan starts from every free layer at a random candidate (uniform), then takes random
    one-step moves (a layer one candidate up or down) that bring the average closer to the
    target, until it is within ``tol``. The plans are spread over *which* layers get more bits
    at a fixed size: the reference distribution against which a search's plan at the same
    average bit-width is placed. Duplicate plans are allowed (they are rare for many layers).

    Raises:
        ValueError: the target is outside what the candidates (and ``fixed``) allow, or no plan
            lands within ``tol`` after ``max_tries`` attempts (``tol`` finer than the layers'
            granularity).
    """
    if not (isinstance(tol, numbers.Real) and tol > 0):
        raise ValueError(f"tol must be a positive number of bits, got {tol!r}")
    layers, w, cands, fixed = _checked(numel, n, bits, fixed)
    free = np.array([k not in fixed for k in layers])
    fixed_bits = np.array([fixed.get(k, 0) for k in layers], dtype=float)
    total = w.sum()
    lo = (w[free].sum() * cands[0] + (w * fixed_bits)[~free].sum()) / total
    hi = (w[free].sum() * cands[-1] + (w * fixed_bits)[~free].sum()) / total
    target = float(avg_bits)
    if not lo - tol <= target <= hi + tol:
        raise ValueError(f"avg_bits={target:g} is outside the reachable range "
                         f"[{lo:.3f}, {hi:.3f}] for these candidates and fixed layers")
    rng = np.random.default_rng(seed)
    frac = w / total
    free_idx = np.flatnonzero(free)
    plans: list[dict[str, int]] = []
    for _ in range(int(n)):
        for _attempt in range(max_tries):
            col = np.zeros(len(layers), dtype=int)
            col[free_idx] = rng.integers(0, cands.size, size=free_idx.size)
            b = np.where(free, cands[col], fixed_bits)
            gap = float(frac @ b) - target
            while abs(gap) > tol:
                if gap > 0:  # too many bits: lower a layer
                    movable = free_idx[col[free_idx] > 0]
                    step = -(cands[col[movable]] - cands[col[movable] - 1]) * frac[movable]
                else:
                    movable = free_idx[col[free_idx] < cands.size - 1]
                    step = (cands[col[movable] + 1] - cands[col[movable]]) * frac[movable]
                ok = np.abs(gap + step) < abs(gap)  # the move brings the average closer
                if not ok.any():
                    break
                k = rng.choice(np.flatnonzero(ok))
                col[movable[k]] += 1 if gap < 0 else -1
                b = np.where(free, cands[col], fixed_bits)
                gap = float(frac @ b) - target
            if abs(gap) <= tol:
                plans.append({k: int(v) for k, v in zip(layers, b, strict=True)})
                break
        else:
            raise ValueError(f"no plan within tol={tol:g} bits of avg_bits={target:g} after "
                             f"{max_tries} tries; raise tol")
    return plans
