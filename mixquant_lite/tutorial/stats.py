"""Sound comparisons for the tutorial: paired tests, clustered bootstraps, control plans.

The paired tests (:func:`paired_compare`, :func:`paired_table`, :func:`as_correct`,
:class:`PairedComparison`) live in the core module :mod:`mixquant_lite.stats` (``reproduce``
uses them too) and are re-exported here under the same names.

Two models scored on the *same* test images are compared image by image, never by their two
accuracies alone: the per-image outcomes are paired, and a difference of one image in 1,000
(0.1 points) is far inside the noise of a 1,000-image test set.

- :func:`paired_compare` -- accuracy of A and B, their difference with a confidence interval
  (Newcombe's hybrid score interval for paired proportions, or a paired bootstrap over images),
  the exact McNemar p-value and a verdict (``"A better"``, ``"B better"`` or
  ``"no difference detected"``). :func:`paired_table` does it for many pairs, and
  :func:`compare_to_uniform` for every mixed-precision row of a ``reproduce`` results table.
- :func:`cluster_bootstrap_corr` -- a rank correlation with a bootstrap that resamples the
  independent unit (layers), not the (layer, bit-width) rows; :func:`compare_correlations` --
  two correlations with the same outcome, compared on the same resamples.
- :func:`decorrelated_plans` / :func:`random_plans_at` -- random bit-width plans whose average
  bit-width and spread are drawn independently, and random plans at one average bit-width (a
  reference distribution for a search's plan).
- :func:`per_bit_factor` / :func:`law_qe_ratio` -- the exact ``s^2/12`` law, the one statement
  of it used across the series.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

# The paired tests live in the core (``reproduce`` uses them); re-exported here by name.
from ..stats import (  # noqa: F401
    TIE,
    PairedComparison,
    as_correct,
    mcnemar_exact,
    paired_compare,
    paired_table,
)
from ..validate import check_int

__all__ = [
    "as_correct",
    "PairedComparison",
    "paired_compare",
    "paired_table",
    "tally_verdicts",
    "compare_to_uniform",
    "cluster_bootstrap_corr",
    "compare_correlations",
    "CorrelationComparison",
    "per_bit_factor",
    "law_qe_ratio",
]


def tally_verdicts(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Count the verdicts of a :func:`paired_table` / :func:`compare_to_uniform` table.

    Returns one row per group of ``by`` (or one row) with ``pairs``, ``a_better`` (the first
    named is better), ``b_better``, ``ties`` and ``mean_diff`` (points).
    """
    def one(g: pd.DataFrame) -> dict[str, Any]:
        tie = g["verdict"] == TIE
        a_better = ~tie & (g["diff"] > 0)
        return dict(pairs=len(g), a_better=int(a_better.sum()),
                    b_better=int((~tie & ~a_better).sum()), ties=int(tie.sum()),
                    mean_diff=float(g["diff"].mean()) if len(g) else float("nan"))

    by = list(by)
    if not by:
        return pd.DataFrame([one(table)])
    rows = [dict(zip(by, k if isinstance(k, tuple) else (k,), strict=True), **one(g))
            for k, g in table.groupby(by, sort=False)]
    return pd.DataFrame(rows, columns=[*by, "pairs", "a_better", "b_better", "ties",
                                       "mean_diff"])


def compare_to_uniform(
    df: pd.DataFrame,
    masks: Sequence[str],
    *,
    tol: float = 0.1,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every mixed-precision row of a ``reproduce`` table against its uniform counterpart.

    Args:
        df: the results table (``results/<stem>.csv``): columns ``section``, ``method``,
            ``weight_bits``, ``act_bits``, ``top1``, ``plan``.
        masks: per-image correctness of each row, in row order (the ``per_image_correct`` list of
            ``results/<stem>.json``).
        tol: a mixed row (``"<search> + <quantizer>"``) is paired with the uniform row of the same
            section, quantizer and activation setting with the nearest ``weight_bits``, if within
            ``tol`` bits; rows with no such uniform row are left out.

    Returns:
        One row per pair: ``section``, ``quantizer``, ``search``, ``act_bits``, ``mixed_bits``,
        ``uniform_bits``, ``same_plan``, then the :class:`PairedComparison` fields with A = the
        mixed plan, B = the uniform one (``diff`` = mixed minus uniform, points).
    """
    if len(masks) != len(df):
        raise ValueError(f"masks must hold one entry per row of df: {len(masks)} vs {len(df)}")
    df = df.reset_index(drop=True)
    act = df["act_bits"] if "act_bits" in df else pd.Series([pd.NA] * len(df))
    rows = []
    for i, r in df.iterrows():
        method = str(r["method"])
        if " + " not in method:
            continue
        search, quantizer = method.split(" + ", 1)
        same_act = act.isna() if pd.isna(act[i]) else act == act[i]
        cands = df[(df["section"] == r["section"]) & (df["method"] == quantizer) & same_act]
        if cands.empty:
            continue
        j = int((cands["weight_bits"] - r["weight_bits"]).abs().idxmin())
        if abs(df.loc[j, "weight_bits"] - r["weight_bits"]) > tol:
            continue
        a_lab = f"{method} W{r['weight_bits']:.2f}"
        b_lab = f"{quantizer} W{df.loc[j, 'weight_bits']:.2f}"
        cmp = paired_compare(masks[i], masks[j], labels=(a_lab, b_lab), alpha=alpha)
        rows.append(dict(section=r["section"], quantizer=quantizer, search=search,
                         act_bits=act[i], mixed_bits=float(r["weight_bits"]),
                         uniform_bits=float(df.loc[j, "weight_bits"]),
                         same_plan=str(r["plan"]) == str(df.loc[j, "plan"]), **cmp.to_dict()))
    cols = ["section", "quantizer", "search", "act_bits", "mixed_bits", "uniform_bits",
            "same_plan", *PairedComparison.__dataclass_fields__]
    out = pd.DataFrame(rows, columns=cols)
    out["act_bits"] = out["act_bits"].astype("Int64")
    return out


# ---------------------------------------------------------------------------- correlations


def _cluster_index(clusters: Any, n: int, n_boot: int, rng: np.random.Generator) -> list:
    """Row indices of ``n_boot`` cluster resamples: clusters drawn with replacement, each
    bringing all its rows. Equal-sized clusters give one ``(n_boot, n)`` array."""
    if clusters is None:
        return [rng.integers(0, n, size=(n_boot, n))]
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"clusters must give one label per row ({n}), got shape {labels.shape}")
    _, inv = np.unique(labels, return_inverse=True)
    groups = [np.flatnonzero(inv == k) for k in range(inv.max() + 1)]
    if len(groups) < 3:
        raise ValueError(f"need at least 3 clusters to resample, got {len(groups)}")
    pick = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    sizes = {len(g) for g in groups}
    if len(sizes) == 1:
        mat = np.stack(groups)  # (n_clusters, size)
        return [mat[pick].reshape(n_boot, -1)]
    return [np.concatenate([groups[k] for k in row]) for row in pick]


def _corr_rows(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation along the last axis (rows of resamples); NaN where a row is constant."""
    if method == "spearman":
        x, y = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _boot_corr(idx_sets: list, x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    if len(idx_sets) == 1 and np.ndim(idx_sets[0]) == 2:
        idx = idx_sets[0]
        return _corr_rows(x[idx], y[idx], method)
    return np.array([_corr_rows(x[i], y[i], method) for i in idx_sets], dtype=float)


def _vectors(x: Any, y: Any, *more: Any) -> list[np.ndarray]:
    out = [np.asarray(v, dtype=float) for v in (x, y, *more)]
    n = out[0].shape
    if any(v.ndim != 1 or v.shape != n for v in out):
        raise ValueError(f"x and y must be 1-D and of equal length, got {[v.shape for v in out]}")
    if n[0] < 3:
        raise ValueError(f"need at least 3 rows, got {n[0]}")
    if any(not np.isfinite(v).all() for v in out):
        raise ValueError("x and y must be finite (no NaN / inf)")
    return out


def _check_method(method: str) -> str:
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    return method


def cluster_bootstrap_corr(
    x: Any,
    y: Any,
    clusters: Any = None,
    *,
    method: str = "spearman",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> tuple[float, float, float]:
    """A correlation with a percentile bootstrap interval that resamples clusters.

    Args:
        x, y: 1-D, equal length (rows).
        clusters: one label per row (e.g. the layer of each (layer, bit-width) row); the
            bootstrap draws clusters with replacement and takes all rows of each, so rows of the
            same layer stay together. ``None``: rows are independent (resample rows).
        method: ``"spearman"`` (rank) or ``"pearson"``.

    Returns:
        ``(rho, lo, hi)``: the correlation of the data and the ``(1-ci)/2``, ``(1+ci)/2``
        quantiles of the resampled correlations (resamples with a constant variable dropped).
    """
    x, y = _vectors(x, y)
    method = _check_method(method)
    n_boot = check_int("n_boot", n_boot, 100)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rho = float(_corr_rows(x, y, method))
    rng = np.random.default_rng(seed)
    boot = _boot_corr(_cluster_index(clusters, len(x), n_boot, rng), x, y, method)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, float("nan"), float("nan")
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return rho, float(lo), float(hi)


@dataclass(frozen=True)
class CorrelationComparison:
    """Two correlations with one outcome, compared on the same bootstrap resamples.

    ``diff = rho_1 - rho_2``; ``ci_low``/``ci_high`` its percentile interval; ``p_value`` the
    two-sided bootstrap p-value (twice the smaller share of resampled differences on either side
    of 0, capped at 1); ``verdict``: ``"<1> stronger"`` / ``"<2> stronger"`` when the interval
    excludes 0, else :data:`TIE`. "Stronger" compares signed correlations.
    """

    label_1: str
    label_2: str
    n: int
    rho_1: float
    rho_2: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str

    def __str__(self) -> str:
        return (f"{self.label_1} rho = {self.rho_1:.2f} vs {self.label_2} rho = {self.rho_2:.2f}"
                f" (n = {self.n}): diff {self.diff:+.2f}, paired bootstrap CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], p = {self.p_value:.3g}"
                f" -> {self.verdict}")


def compare_correlations(
    x1: Any,
    x2: Any,
    y: Any,
    clusters: Any = None,
    *,
    labels: tuple[str, str] = ("x1", "x2"),
    method: str = "spearman",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> CorrelationComparison:
    """Is ``corr(x1, y)`` different from ``corr(x2, y)``, measured on the same rows? (Nine
    parameters: three data vectors and the bootstrap's options.)

    Both correlations are computed on every resample (clusters or rows, as in
    :func:`cluster_bootstrap_corr`), so their dependence through the shared ``y`` and rows is
    kept: the interval of the difference is the paired one, not two overlapping intervals.
    """
    x1, x2, y = _vectors(x1, x2, y)
    method = _check_method(method)
    n_boot = check_int("n_boot", n_boot, 100)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    r1, r2 = float(_corr_rows(x1, y, method)), float(_corr_rows(x2, y, method))
    rng = np.random.default_rng(seed)
    idx = _cluster_index(clusters, len(y), n_boot, rng)
    d = _boot_corr(idx, x1, y, method) - _boot_corr(idx, x2, y, method)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise ValueError("every resample had a constant variable: cannot compare")
    lo, hi = (float(v) for v in np.quantile(d, [(1 - ci) / 2, (1 + ci) / 2]))
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    l1, l2 = str(labels[0]), str(labels[1])
    verdict = f"{l1} stronger" if lo > 0 else f"{l2} stronger" if hi < 0 else TIE
    return CorrelationComparison(l1, l2, len(y), r1, r2, r1 - r2, lo, hi, p, verdict)


# ---------------------------------------------------------------------------- the s^2/12 law


def law_qe_ratio(bits: Any, baseline_bits: int = 8) -> np.ndarray | float:
    """``QE_b / QE_baseline`` under the uniform-error law ``QE = s^2 / 12``.

    With the step ``s = range / (2^b - 1)`` and the same range at every bit-width, the ratio is
    exactly ``((2^baseline - 1) / (2^b - 1))^2`` (not ``4^(baseline - b)``).
    """
    b = np.asarray(bits, dtype=float)
    if (b < 1).any() or (b > 16).any():
        raise ValueError(f"bits must be in 1..16, got {bits!r}")
    out = ((2.0**baseline_bits - 1) / (2.0**b - 1)) ** 2
    return float(out) if out.ndim == 0 else out


def per_bit_factor(bits: Any) -> np.ndarray | float:
    """How many times QE grows when one bit is removed, going from ``bits + 1`` to ``bits``,
    under the ``s^2/12`` law: ``((2^(b+1) - 1) / (2^b - 1))^2``.

    5.44 for 3 -> 2 bits, 4.59 for 4 -> 3, 4.27 for 5 -> 4, tending to 4 for many bits.
    """
    b = np.asarray(bits, dtype=float)
    if (b < 1).any() or (b > 15).any():
        raise ValueError(f"bits must be in 1..15 (the bit-width after removing one), got {bits!r}")
    out = ((2.0 ** (b + 1) - 1) / (2.0**b - 1)) ** 2
    return float(out) if out.ndim == 0 else out
