"""Rank correlation with bootstrap intervals, and words for its size."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["spearman_bootstrap", "correlation_table", "describe_correlation"]


def _rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), vectorised."""
    return stats.rankdata(a, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_bootstrap(
    x: Sequence[float],
    y: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    *,
    ci: float = 0.95,
) -> tuple[float, float, float]:
    """Spearman's rank correlation of ``x`` and ``y`` with a percentile bootstrap interval.

    The pairs ``(x_i, y_i)`` are resampled with replacement ``n_boot`` times (generator seeded with
    ``seed``); resamples where either variable is constant (rho undefined) are dropped.

    Returns:
        ``(rho, lo, hi)``: ``scipy.stats.spearmanr`` on the data and the ``(1-ci)/2`` and
        ``(1+ci)/2`` quantiles of the bootstrap distribution.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got {xa.shape} and {ya.shape}")
    if len(xa) < 3:
        raise ValueError(f"need at least 3 pairs, got {len(xa)}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rho = float(stats.spearmanr(xa, ya).statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(xa), size=(n_boot, len(xa)))
    boot = _pearson_rows(_rank_rows(xa[idx]), _rank_rows(ya[idx]))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, float("nan"), float("nan")
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return rho, float(lo), float(hi)


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
    """:func:`spearman_bootstrap` for every predictor ``x`` and outcome ``y``, pooled and per group.

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
                rho, lo, hi = spearman_bootstrap(g[x].to_numpy(), g[y].to_numpy(), n_boot, seed,
                                                 ci=ci)
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
