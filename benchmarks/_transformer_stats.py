"""Small statistics for the transformer study: Holm, paired item tests, clustered Spearman.

Holm is written here because the series' shared helper was not on this branch (issue 16);
the coordinator may swap in the shared one.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, spearmanr


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def paired_items(a, b, kind: str, n_boot: int = 10_000, seed: int = 0) -> dict:
    """A vs B on the same items. ``kind``: ``"correct"`` (bools; exact McNemar, difference in
    points with a paired-bootstrap 95% CI), ``"higher"`` / ``"lower"`` (reals; paired bootstrap
    of the mean difference, two-sided bootstrap p-value). ``diff_better`` > 0 means A better."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same items: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    n = a.size
    if kind == "correct":
        only_a, only_b = int(((a > 0) & (b == 0)).sum()), int(((a == 0) & (b > 0)).sum())
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        d = a - b
        boots = d[rng.integers(0, n, (n_boot, n))].mean(1) * 100.0
        diff = float(d.mean() * 100.0)
        return {"mean_a": float(a.mean() * 100), "mean_b": float(b.mean() * 100), "diff": diff,
                "ci_low": float(np.quantile(boots, 0.025)),
                "ci_high": float(np.quantile(boots, 0.975)), "only_a": only_a, "only_b": only_b,
                "p_value": float(p), "test": "exact McNemar", "diff_better": diff}
    if kind not in ("higher", "lower"):
        raise ValueError(f"kind must be 'correct', 'higher' or 'lower', got {kind!r}")
    d = a - b
    boots = np.array([d[rng.integers(0, n, n)].mean() for _ in range(min(n_boot, 4000))])
    p = min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))
    p = max(p, 1.0 / len(boots))
    diff = float(d.mean())
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": diff,
            "ci_low": float(np.quantile(boots, 0.025)), "ci_high": float(np.quantile(boots, 0.975)),
            "p_value": float(p), "test": "paired bootstrap",
            "diff_better": diff if kind == "higher" else -diff}


def spearman_clustered(pred: np.ndarray, damage: np.ndarray, n_boot: int = 4000,
                       seed: int = 0) -> dict:
    """Spearman rho of ``pred`` with ``damage`` (both (layers, bit-widths), pooled over the
    columns) with a bootstrap resampling layers (rows, clusters): 95% CI and a two-sided
    bootstrap p-value for rho = 0 (at least 1 / n_boot)."""
    pred, damage = np.asarray(pred, float), np.asarray(damage, float)
    rho = float(spearmanr(pred.ravel(), damage.ravel()).statistic)
    rng = np.random.default_rng(seed)
    n = pred.shape[0]
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        r = spearmanr(pred[idx].ravel(), damage[idx].ravel()).statistic
        if np.isfinite(r):
            boots.append(r)
    bs = np.asarray(boots)
    p = min(1.0, 2 * min((bs <= 0).mean(), (bs >= 0).mean())) if bs.size else 1.0
    return {"rho": rho, "ci_low": float(np.quantile(bs, 0.025)) if bs.size else float("nan"),
            "ci_high": float(np.quantile(bs, 0.975)) if bs.size else float("nan"),
            "p_value": float(max(p, 1.0 / n_boot)), "n_layers": int(n)}
