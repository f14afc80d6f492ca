"""An alternative reading of the MixQuant rule, for comparison with the one the package uses.

The paper's public text compares each layer's QE with "a baseline int8 QE, scaled by the QEM".
:func:`mixquant_lite.search.mixquant` reads the baseline as *each layer's own* 8-bit QE
(threshold ``t_l = QEM * QE(W_l, 8)``); docs/reading.md gives the evidence for that reading and
against it. The other plausible reading, implemented here and labelled as such, is one
model-wide baseline: the weight-weighted mean 8-bit QE of all layers,

    t = QEM * (sum_l numel_l * QE(W_l, baseline)) / (sum_l numel_l),

the same threshold for every layer; each layer then gets the smallest candidate whose QE is
<= t, or the largest candidate if none qualifies. Layers with large weights (large QE at every
bit-width) keep more bits, small-range layers fewer, so even QEMs of 1-3 give mixed plans.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..plan import BitPlan
from ..qe_table import QETable
from ..quant import check_bits

__all__ = ["mixquant_model_baseline", "model_baseline_qe"]

READING = "alternative reading: model-wide baseline (weight-weighted mean 8-bit QE)"


def _check_table(table: QETable) -> QETable:
    if not isinstance(table, QETable):
        raise TypeError(f"table must be a QETable (from qe_table()), got {type(table).__name__}")
    return table


def _check_baseline(table: QETable, baseline_bits: int) -> int:
    baseline_bits = check_bits(baseline_bits, "baseline_bits")
    if baseline_bits not in table.bits:
        raise ValueError(f"baseline_bits={baseline_bits} must be one of the table's candidates "
                         f"{list(table.bits)}")
    return baseline_bits


def _check_qem(qem: float) -> float:
    if isinstance(qem, bool) or not isinstance(qem, numbers.Real):
        raise TypeError(f"qem must be a positive finite number, got {qem!r}")
    qem = float(qem)
    if not math.isfinite(qem) or qem <= 0:
        raise ValueError(f"qem must be a positive finite number, got {qem}")
    return qem


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
            raise ValueError(f"fixed bits of layer {layer!r} must be one of the table's "
                             f"candidates {list(table.bits)}, got {b}")
        out[layer] = b
    return out


def model_baseline_qe(table: QETable, baseline_bits: int = 8) -> float:
    """The model-wide baseline: ``sum_l numel_l * QE(W_l, baseline) / sum_l numel_l`` (squared
    weight units), over all layers of ``table``."""
    _check_table(table)
    baseline_bits = _check_baseline(table, baseline_bits)
    col = table.values[:, table.bits.index(baseline_bits)]
    numel = table.numel_array().astype(np.float64)
    return float((numel * col).sum() / numel.sum())


def mixquant_model_baseline(
    table: QETable,
    qem: float,
    *,
    baseline_bits: int = 8,
    fixed: Mapping[str, int] | None = None,
) -> BitPlan:
    """MixQuant under the alternative reading: one threshold for all layers (an ALTERNATIVE
    reading of the paper, not the one :func:`~mixquant_lite.search.mixquant` implements).

    Args:
        table: the QE table (``measure="qe"``).
        qem: the QE multiplier, a finite number > 0. Larger -> fewer bits.
        baseline_bits: the bit-width of the baseline QE; one of ``table.bits``.
        fixed: ``{layer: bits}`` kept as given (e.g. first and last layer at 8).

    Returns:
        A :class:`BitPlan` over the table's layers; ``meta`` records ``method``
        (``"mixquant-model-baseline"``), ``reading``, ``qem``, ``baseline_bits`` and
        ``threshold`` (the common threshold, squared weight units).
    """
    _check_table(table)
    if table.measure != "qe":
        raise ValueError(f"the MixQuant rule needs a QE table (measure='qe'), got measure="
                         f"{table.measure!r}")
    qem = _check_qem(qem)
    baseline_bits = _check_baseline(table, baseline_bits)
    fixed = _check_fixed(table, fixed)
    threshold = qem * model_baseline_qe(table, baseline_bits)
    ok = table.values <= threshold
    cols = np.where(ok.any(1), ok.argmax(1), len(table.bits) - 1)
    bits = {n: int(table.bits[c]) for n, c in zip(table.layers, cols, strict=True)}
    bits.update(fixed)
    meta = {"method": "mixquant-model-baseline", "reading": READING, "qem": qem,
            "baseline_bits": baseline_bits, "threshold": threshold}
    return BitPlan(bits, dict(table.numel), table.per_channel, meta)
