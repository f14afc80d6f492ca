"""Tables of rank correlations with bootstrap intervals (:func:`~.stats.cluster_bootstrap_corr`,
the one correlation bootstrap), and words for their size."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .stats import cluster_bootstrap_corr

__all__ = ["correlation_table", "describe_correlation"]


def correlation_table(
    df: pd.DataFrame,
    xs: Sequence[str] = ("qe", "qe_norm"),
    ys: Sequence[str] = ("drop", "loss_increase"),
    *,
    by: str | None = "bits",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """:func:`~.stats.cluster_bootstrap_corr` (Spearman) for every predictor ``x`` and outcome
    ``y``, pooled and per group.

    Returns one row per (x, y, subset) with columns ``x``, ``y``, ``subset`` (``"all"`` or
    ``"<by>=<value>"``), ``n``, ``rho``, ``lo``, ``hi`` and ``excludes_zero`` (the interval lies
    entirely above or below 0).
    """
    subsets = [("all", df)]
    if by is not None:
        subsets += [(f"{by}={k}", g) for k, g in df.groupby(by, sort=True)]
    rows = []
    for x in xs:
        for y in ys:
            for label, g in subsets:
                rho, lo, hi = cluster_bootstrap_corr(g[x].to_numpy(), g[y].to_numpy(),
                                                     n_boot=n_boot, seed=seed, ci=ci)
                rows.append(dict(x=x, y=y, subset=label, n=len(g), rho=rho, lo=lo, hi=hi,
                                 excludes_zero=bool(lo > 0 or hi < 0)))
    return pd.DataFrame(rows)


def describe_correlation(rho: float, lo: float, hi: float) -> str:
    """One line for a correlation and its interval: the numbers, then what the interval allows.

    ``"rho = 0.64 [0.44, 0.78]: a positive relation"`` when the interval excludes 0, else
    ``"... : indistinguishable from none"``.
    """
    text = f"rho = {rho:.2f} [{lo:.2f}, {hi:.2f}]: "
    if lo > 0 or hi < 0:
        return text + ("a positive relation" if lo > 0 else "a negative relation")
    return text + "indistinguishable from none"
