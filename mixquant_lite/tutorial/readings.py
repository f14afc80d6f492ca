"""An alternative reading of the MixQuant rule, for comparison with the one the package uses.

The paper's public text compares each layer's QE with "a baseline int8 QE, scaled by the QEM".
:func:`mixquant_lite.search.mixquant` reads the baseline as *each layer's own* 8-bit QE
(threshold ``t_l = QEM * QE(W_l, 8)``); docs/reading.md gives the evidence for that reading and
against it. The other plausible reading, ``mixquant(table, qem, baseline="model")``,
labelled as such, is one model-wide baseline: the weight-weighted mean 8-bit QE of all layers,

    t = QEM * (sum_l numel_l * QE(W_l, baseline)) / (sum_l numel_l),

the same threshold for every layer; each layer then gets the smallest candidate whose QE is
<= t, or the largest candidate if none qualifies. Layers with large weights (large QE at every
bit-width) keep more bits, small-range layers fewer, so even QEMs of 1-3 give mixed plans.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..plan import BitPlan
from ..search import MODEL_READING, mixquant, model_baseline_qe
from ..table import QETable

__all__ = ["mixquant_model_baseline", "model_baseline_qe", "MODEL_READING"]



def mixquant_model_baseline(
    table: QETable,
    qem: float,
    *,
    baseline_bits: int = 8,
    fixed: Mapping[str, int] | None = None,
) -> BitPlan:
    """MixQuant under the alternative reading: one threshold for all layers (an ALTERNATIVE
    reading of the paper, not the package's default); the same as
    ``mixquant(table, qem, baseline="model", ...)``.

    Returns:
        A :class:`BitPlan` over the table's layers; ``meta`` records ``method``
        (``"mixquant-model-baseline"``), ``reading``, ``qem``, ``baseline_bits`` and
        ``threshold`` (the common threshold, squared weight units).
    """
    return mixquant(table, qem, baseline_bits=baseline_bits, fixed=fixed, baseline="model")
