"""The QE law of ``docs/method.md`` ("QE"): measured ``QE_b / QE_8`` next to the ``s^2/12``
prediction."""
from __future__ import annotations

import pandas as pd

from .stats import law_qe_ratio

__all__ = ["qe_matrix", "qe_ratio_frame"]


def qe_matrix(table) -> pd.DataFrame:
    """A QE table as a wide frame: index layer names (forward order), columns bit-widths."""
    return pd.DataFrame(
        {int(b): [table.qe(layer, b) for layer in table.layers] for b in table.bits},
        index=pd.Index(list(table.layers), name="layer"),
    ).rename_axis(columns="bits")


def qe_ratio_frame(table, baseline_bits: int = 8) -> pd.DataFrame:
    """Measured ``QE_b / QE_base`` for every layer and bit-width of a QE table, with the prediction.

    Returns long format: ``layer``, ``bits``, ``ratio`` (measured), ``predicted`` and
    ``rel_dev`` (``ratio / predicted - 1``). Layers whose baseline QE is 0 are skipped.
    """
    rows = []
    for layer in table.layers:
        base = table.qe(layer, baseline_bits)
        if base <= 0:
            continue
        for b in table.bits:
            r = table.qe(layer, b) / base
            p = law_qe_ratio(b, baseline_bits)
            rows.append(dict(layer=layer, bits=int(b), ratio=r, predicted=p, rel_dev=r / p - 1))
    return pd.DataFrame(rows)
