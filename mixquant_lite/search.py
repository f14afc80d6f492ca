"""The MixQuant search, QEM sweeps, and exact budget-constrained plans.

Definitions: ``docs/method.md`` ("The MixQuant rule"): for each layer ``l``, threshold
``t_l = QEM * QE(W_l, baseline)``; the chosen bit-width is the smallest candidate ``b`` with
``QE(W_l, b) <= t_l``; if none qualifies, the largest candidate. ``QEM <= 0``, NaN or inf is an
error. The search is linear in layers x candidates; a sweep reuses one QE table.

Consequences pinned by the tests: QEM = 1 keeps the baseline for every layer whose QE falls
with the bit-width; a QEM below 1 falls back to the largest candidate (with the baseline as
the largest); an exact tie ``QE == t`` qualifies (``<=``); a layer whose QE is 0 at several
bit-widths (a constant layer) gets the smallest of them.

Beyond the paper (our additions): :func:`plan_for_budget` -- the plan of least total squared
weight error ``sum_l numel_l * QE(l, b_l)`` within a storage budget, solved exactly as a
0/1 integer programme -- and :func:`qem_for_budget`, the smallest QEM whose MixQuant plan fits.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .plan import BitPlan
from .qspec import table_spec
from .quant import check_bits
from .table import QETable

__all__ = ["mixquant", "sweep", "plan_for_budget", "qem_for_budget", "model_baseline_qe",
           "BASELINES"]

# Zero relative and absolute optimality gaps: HiGHS stops only at a proven optimum (its default
# absolute gap, 1e-6, could otherwise end the search early on small objectives).
_MILP_OPTIONS = {"mip_rel_gap": 0.0, "mip_abs_gap": 0.0, "presolve": True}


def _check_table(table: QETable) -> QETable:
    if not isinstance(table, QETable):
        raise TypeError(f"table must be a QETable (from qe_table()), got {type(table).__name__}")
    return table


def _check_qem(qem, name: str = "qem") -> float:
    if isinstance(qem, bool) or not isinstance(qem, numbers.Real):
        raise TypeError(f"{name} must be a positive finite number, got {qem!r}")
    qem = float(qem)
    if not math.isfinite(qem) or qem <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {qem}")
    return qem


def _check_baseline(table: QETable, baseline_bits) -> int:
    baseline_bits = check_bits(baseline_bits, "baseline_bits")
    if baseline_bits not in table.bits:
        raise ValueError(
            f"baseline_bits={baseline_bits} must be one of the table's candidates "
            f"{list(table.bits)}"
        )
    return baseline_bits


def _check_fixed(table: QETable, fixed: Mapping[str, int] | None) -> dict[str, int]:
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping {{layer: bits}}, got {type(fixed).__name__}")
    out = {}
    for layer, b in fixed.items():
        if layer not in table.numel:
            raise ValueError(f"fixed names layer {layer!r}, which is not in the table")
        b = check_bits(b, f"fixed bits of layer {layer!r}")
        if b not in table.bits:
            raise ValueError(
                f"fixed bits of layer {layer!r} must be one of the table's candidates "
                f"{list(table.bits)}, got {b}"
            )
        out[layer] = b
    return out


def _rule(values: np.ndarray, bits: tuple[int, ...], base_col: int, qem: float) -> np.ndarray:
    """Column index chosen per row by the MixQuant rule (``values``: layers x ascending bits)."""
    ok = values <= qem * values[:, base_col : base_col + 1]
    return np.where(ok.any(1), ok.argmax(1), len(bits) - 1)


def _plan(table: QETable, cols: np.ndarray, fixed: dict[str, int], meta: dict) -> BitPlan:
    bits = {n: table.bits[c] for n, c in zip(table.layers, cols, strict=True)}
    bits.update(fixed)
    return BitPlan(bits, dict(table.numel), table_spec(table), meta, fixed)


BASELINES = ("layer", "model")
MODEL_READING = "alternative reading: model-wide baseline (weight-weighted mean 8-bit QE)"


def model_baseline_qe(table: QETable, baseline_bits: int = 8) -> float:
    """The model-wide baseline of the alternative reading: ``sum_l numel_l * QE(W_l, baseline) /
    sum_l numel_l`` over all layers of ``table`` (squared weight units)."""
    _check_table(table)
    baseline_bits = _check_baseline(table, baseline_bits)
    col = table.values[:, table.bits.index(baseline_bits)]
    numel = table.numel_array().astype(np.float64)
    return float((numel * col).sum() / numel.sum())


def mixquant(
    table: QETable,
    qem: float,
    *,
    baseline_bits: int = 8,
    fixed: Mapping[str, int] | None = None,
    baseline: str = "layer",
) -> BitPlan:
    """The MixQuant plan for ``qem`` (``docs/method.md``, "The MixQuant rule").

    Args:
        table: the QE table (:func:`mixquant_lite.table.qe_table`).
        qem: the QE multiplier, a finite number > 0. Larger -> fewer bits.
        baseline_bits: the baseline bit-width; must be one of ``table.bits``.
        fixed: ``{layer: bits}`` kept as given (e.g. first and last layer at 8); layers must be
            in the table, bits among its candidates.
        baseline: which reading of the paper's "baseline int8 QE" (``docs/reading.md``).
            ``"layer"`` (default, the package's reading): each layer's own QE at
            ``baseline_bits``, ``t_l = QEM * QE(W_l, baseline_bits)``. ``"model"`` (an
            ALTERNATIVE reading, labelled as such in ``meta["reading"]``): one threshold for all
            layers, ``t = QEM * model_baseline_qe(table)``; it gives mixed plans even at QEM 1-3.

    Returns:
        A :class:`BitPlan` over all the table's layers (``meta`` records method, qem, baseline;
        with ``baseline="model"`` also ``reading`` and ``threshold``).
    """
    _check_table(table)
    qem = _check_qem(qem)
    baseline_bits = _check_baseline(table, baseline_bits)
    fixed = _check_fixed(table, fixed)
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "model":
        if table.measure != "qe":
            raise ValueError("the model-wide baseline needs a QE table (measure='qe'), got "
                             f"measure={table.measure!r}")
        threshold = qem * model_baseline_qe(table, baseline_bits)
        ok = table.values <= threshold
        cols = np.where(ok.any(1), ok.argmax(1), len(table.bits) - 1)
        meta = {"method": "mixquant-model-baseline", "reading": MODEL_READING, "qem": qem,
                "baseline_bits": baseline_bits, "threshold": threshold}
        return _plan(table, cols, fixed, meta)
    cols = _rule(table.values, table.bits, table.bits.index(baseline_bits), qem)
    meta = {"method": "mixquant", "qem": qem, "baseline_bits": baseline_bits}
    return _plan(table, cols, fixed, meta)


def sweep(
    table: QETable,
    qems: Iterable[float],
    *,
    baseline_bits: int = 8,
    fixed: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """MixQuant at every QEM of ``qems``, all from the one ``table``.

    Returns:
        One row per QEM (index ``qem``, in the given order) with columns ``avg_bits``,
        ``size_bytes`` (weights), ``compression`` (vs float32), ``sq_error`` (``sum numel*QE``)
        and ``plan`` (the :class:`BitPlan`).
    """
    qems = [_check_qem(q, "each qem") for q in qems]
    if not qems:
        raise ValueError("qems must not be empty")
    rows = []
    for q in qems:
        plan = mixquant(table, q, baseline_bits=baseline_bits, fixed=fixed)
        rows.append(
            {
                "qem": q,
                "avg_bits": plan.avg_bits,
                "size_bytes": plan.size_bytes,
                "compression": plan.compression,
                "sq_error": plan.squared_error(table),
                "plan": plan,
            }
        )
    return pd.DataFrame(rows).set_index("qem")


# ---------------------------------------------------------------------------- budgets


def _budget_bits(table: QETable, avg_bits, size_bytes) -> tuple[int, str, float, float]:
    """The budget as a maximum of ``sum(numel * bits)`` (an int), its name, its value, and the
    factor from weight-bits to the caller's unit."""
    if (avg_bits is None) == (size_bytes is None):
        raise ValueError("give exactly one of avg_bits or size_bytes")
    name, value = ("avg_bits", avg_bits) if avg_bits is not None else ("size_bytes", size_bytes)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive finite number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    unit = 1.0 / table.total_numel if name == "avg_bits" else 1.0 / 8
    # Tiny slack so that a budget typed as the exact average (e.g. 4.5) is not lost to rounding.
    limit = math.floor(value / unit * (1 + 1e-12) + 1e-9)
    return limit, name, value, unit


def _total_bits(table: QETable, cols: np.ndarray, fixed: dict[str, int]) -> int:
    bits = np.array(table.bits, dtype=np.int64)[cols]
    for layer, b in fixed.items():
        bits[table.layers.index(layer)] = b
    return int((table.numel_array() * bits).sum())


def plan_for_budget(
    table: QETable,
    *,
    avg_bits: float | None = None,
    size_bytes: float | None = None,
    fixed: Mapping[str, int] | None = None,
) -> BitPlan:
    """The plan of least total cost within a storage budget, solved exactly.

    For a QE table (``measure="qe"``) the cost is the total squared weight error and this
    minimises ``sum_l numel_l * QE(l, b_l)``; for a sensitivity table of another measure it
    minimises ``sum_l values[l, b_l]`` (:meth:`QETable.cost_matrix`). Either way over one
    candidate ``b_l`` per layer subject to
    ``sum_l numel_l * b_l <= budget``, where the budget is ``avg_bits * total weights`` or
    ``8 * size_bytes`` (weight bits). This is a multiple-choice knapsack; it is solved as a 0/1
    integer programme (one binary per layer and candidate, ``scipy.optimize.milp`` with a zero
    optimality gap) and the budget is checked again in exact integer arithmetic.

    Args:
        table: the QE table; its candidates are the allowed bit-widths.
        avg_bits / size_bytes: exactly one of them.
        fixed: ``{layer: bits}`` kept as given (counted in the budget).

    Raises:
        ValueError: no plan meets the budget (the message gives the smallest achievable value),
            both or neither budget given, or a bad ``fixed``.
    """
    _check_table(table)
    limit, name, value, unit = _budget_bits(table, avg_bits, size_bytes)
    fixed = _check_fixed(table, fixed)
    n_layers, n_bits = table.values.shape
    numel = table.numel_array().astype(np.float64)
    bits = np.asarray(table.bits, dtype=np.float64)
    allowed = np.ones((n_layers, n_bits), dtype=bool)
    for layer, b in fixed.items():
        allowed[table.layers.index(layer)] = np.asarray(table.bits) == b
    smallest = int(sum(numel[i] * bits[allowed[i]].min() for i in range(n_layers)))
    if smallest > limit:
        raise ValueError(
            f"no plan meets {name}={value:g}: the smallest achievable is "
            f"{name}={smallest * unit:.6g} (every layer at its smallest allowed candidate)"
        )
    cost = table.cost_matrix()  # QE: squared error of each (layer, candidate); else the measure
    cols = _solve_mckp(cost, numel[:, None] * bits[None, :], allowed, limit)
    meta = {"method": "plan_for_budget", name: value}
    plan = _plan(table, cols, fixed, meta)
    if plan.total_bits > limit:  # the solver's answer is checked in exact integer arithmetic
        raise RuntimeError(f"MILP plan over the budget ({plan.total_bits} > {limit} bits)")
    return plan


def _solve_mckp(
    cost: np.ndarray, weight: np.ndarray, allowed: np.ndarray, limit: int
) -> np.ndarray:
    """Exact multiple-choice knapsack: one allowed column per row, ``sum weight <= limit``,
    least ``sum cost``. Returns the chosen column of each row."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_layers, n_bits = cost.shape
    scale = cost[allowed].max() if (cost[allowed] > 0).any() else 1.0
    c = (cost / scale).ravel()  # scaled to ~1 so that the solver's tolerances are relative
    one_each = np.kron(np.eye(n_layers), np.ones(n_bits))
    ub = allowed.ravel().astype(float)
    slack = 0.0
    for _ in range(20):
        with warnings.catch_warnings():  # scipy warns that it passes mip_abs_gap on verbatim
            warnings.filterwarnings("ignore", "Unrecognized options", RuntimeWarning)
            res = milp(
                c,
                constraints=[
                    LinearConstraint(one_each, 1, 1),
                    LinearConstraint(weight.ravel()[None, :], -np.inf, limit - slack),
                ],
                integrality=np.ones_like(c),
                bounds=Bounds(0, ub),
                options=dict(_MILP_OPTIONS),
            )
        if res.x is None:
            raise RuntimeError(f"MILP solver failed: {res.message}")
        cols = res.x.reshape(n_layers, n_bits).argmax(1)
        if (weight[np.arange(n_layers), cols]).sum() <= limit:
            return cols
        # The solver's feasibility tolerance let the budget slip by a hair: tighten and retry.
        slack = max(2 * slack, 1.0)
    raise RuntimeError("MILP solutions kept exceeding the budget")


def qem_for_budget(
    table: QETable,
    *,
    avg_bits: float | None = None,
    size_bytes: float | None = None,
    baseline_bits: int = 8,
    fixed: Mapping[str, int] | None = None,
) -> float:
    """The smallest QEM whose MixQuant plan meets the budget (``mixquant(table, qem)`` gives it).

    The MixQuant plan only changes where ``QEM * QE(l, baseline)`` crosses some ``QE(l, b)``,
    so the search runs exactly over those breakpoints (bisection, the plan's storage falls as
    QEM grows).

    Raises:
        ValueError: even the most compressing MixQuant plan misses the budget (the message
            gives the smallest achievable value), or bad arguments as in :func:`mixquant`.
    """
    _check_table(table)
    limit, name, value, unit = _budget_bits(table, avg_bits, size_bytes)
    fixed = _check_fixed(table, fixed)
    baseline_bits = _check_baseline(table, baseline_bits)
    base = table.values[:, table.bits.index(baseline_bits)][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (table.values / base)[(base > 0).repeat(len(table.bits), 1)]
    ratios = np.unique(ratios[np.isfinite(ratios) & (ratios > 0)])
    # q*QE_base rounds, so the plan may switch one or two floats above a ratio: try those too.
    up1 = np.nextafter(ratios, np.inf)
    below = ratios[:1] / 2 if len(ratios) else np.array([1.0])  # before the first switch
    top = [np.finfo(float).max]  # every switch made
    cands = np.unique(np.concatenate([below, ratios, up1, np.nextafter(up1, np.inf), top]))
    base_col = table.bits.index(baseline_bits)

    def size(q: float) -> int:
        return _total_bits(table, _rule(table.values, table.bits, base_col, q), fixed)

    if size(cands[-1]) > limit:
        raise ValueError(
            f"no MixQuant plan meets {name}={value:g}: the smallest achievable is "
            f"{name}={size(cands[-1]) * unit:.6g}"
        )
    lo, hi = -1, len(cands) - 1  # size(cands[hi]) <= limit; lo is "too small" (or before start)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(cands[mid]) <= limit:
            hi = mid
        else:
            lo = mid
    return float(cands[hi])
