"""The results table's schema and rows: columns, labels, the plans at each point.

One row per quantized model; the columns are documented in :mod:`mixquant_lite.reproduce`.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ..plan import BitPlan
from ..qspec import table_spec
from ..search import mixquant, qem_for_budget
from ..table import QETable

__all__ = ["COLUMNS", "MATCH_TOL", "method_label", "plan_desc", "uniform_plan", "mixquant_at",
           "matched_label", "fmt_cell", "search_columns"]

COLUMNS = [
    "section", "search", "quantizer", "qem", "weight_bits", "bits_per_weight", "act_bits",
    "weight_MB", "top1",
    "wall_s", "compare_to", "matched", "plan", "note",
]
MATCH_TOL = 0.1  # bits


def method_label(search: str, quantizer: str) -> str:
    """One-string label of a row: the quantizer alone for uniform precision and FP32,
    ``"<search> + <quantizer>"`` otherwise (``"MixQuant + BRECQ"``): the v0.1 ``method``."""
    return quantizer if search in ("uniform", "none") else f"{search} + {quantizer}"


def plan_desc(plan: BitPlan) -> str:
    """The bit-width histogram of ``plan``, ``"bits x layers"`` (``"8x2 3x17"``)."""
    counts = Counter(plan.bits.values())
    return " ".join(f"{b}x{counts[b]}" for b in sorted(counts, reverse=True))

def uniform_plan(table: QETable, bits: int, fixed: dict[str, int]) -> BitPlan:
    """Every layer of ``table`` at ``bits``, the ``fixed`` ones at theirs."""
    return BitPlan({k: fixed.get(k, bits) for k in table.layers}, dict(table.numel),
                   table_spec(table), {"method": "uniform", "bits": bits}, fixed)

def mixquant_at(table: QETable, target: float, fixed: dict[str, int]) -> tuple[BitPlan, float]:
    """The MixQuant plan whose average bit-width is closest to ``target`` (ties: smaller)."""
    qems = list(np.geomspace(1.0, 1e7, 600))
    try:
        qems.append(qem_for_budget(table, avg_bits=target, fixed=fixed))
    except ValueError:
        pass  # no MixQuant plan is that small; the closest one is still chosen below
    plans = [(mixquant(table, float(q), fixed=fixed), float(q)) for q in qems]
    return min(plans, key=lambda pq: (abs(pq[0].avg_bits - target), pq[0].avg_bits, pq[1]))

def matched_label(avg: float, ref: float) -> str:
    """The ``matched`` entry: ``"yes (+0.01)"`` within :data:`MATCH_TOL`, else by how much."""
    d = avg - ref
    if abs(d) <= MATCH_TOL:
        return f"yes ({d:+.2f})"
    return f"no: {d:+.2f} bit ({'bigger' if d > 0 else 'smaller'})"

def fmt_cell(v: Any) -> str:
    """One markdown table cell (missing values empty, floats to 3 decimals)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)

def search_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``search`` and ``quantizer`` columns; a table stored before they existed
    has only the v0.1 ``method`` label (``"MixQuant + BRECQ"``, ``"vanilla"``, ``"FP32"``),
    from which they are derived."""
    if {"search", "quantizer"} <= set(df.columns):
        return df
    if "method" not in df.columns:
        raise ValueError("the results table needs 'search' and 'quantizer' (or 'method') columns")
    df = df.copy()
    method = df["method"].astype(str)
    mixed = method.str.contains(" + ", regex=False)
    df["search"] = np.where(mixed, method.str.split(" + ", n=1, regex=False).str[0],
                            np.where(method == "FP32", "none", "uniform"))
    df["quantizer"] = np.where(mixed, method.str.split(" + ", n=1, regex=False).str[-1], method)
    return df

