"""Paired comparisons, clustered bootstraps, control plans and the s^2/12 law (tutorial.stats),
and the alternative reading of the MixQuant rule (tutorial.readings)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from mixquant_lite.search import mixquant
from mixquant_lite.stats import newcombe_interval
from mixquant_lite.table import QETable
from mixquant_lite.tutorial import plans as control
from mixquant_lite.tutorial import stats
from mixquant_lite.tutorial.readings import mixquant_model_baseline, model_baseline_qe


def outcomes(both, only_a, only_b, neither):
    """Per-image correctness of A and B with the given counts of the four outcome kinds."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=bool), np.array(b, dtype=bool)


# ---------------------------------------------------------------------------- inputs


def test_masks_in_every_form_agree():
    ref = np.array([True, False, True, True])
    for form in ("1011", [1, 0, 1, 1], ref, torch.tensor([True, False, True, True]),
                 np.array([1, 0, 1, 1], dtype=np.int64)):
        np.testing.assert_array_equal(stats.as_correct(form), ref)


@pytest.mark.parametrize("bad,err", [("10a1", ValueError), ([0, 2, 1], ValueError),
                                     ("", ValueError), (np.ones((2, 2)), ValueError),
                                     ([0.5, 1.0], ValueError)])
def test_bad_masks_are_refused_by_name(bad, err):
    with pytest.raises(err, match="correct_a"):
        stats.paired_compare(bad, "1" * 3)


def test_lengths_must_match():
    with pytest.raises(ValueError, match="same images"):
        stats.paired_compare("101", "1010")


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 2.0, True])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        stats.paired_compare("10", "01", alpha=alpha)


# ---------------------------------------------------------------------------- McNemar and CI


def test_mcnemar_by_hand():
    # 10 images only A gets right, 2 only B: p = 2 * P(X <= 2 | 12, 1/2) = 2 * 79 / 4096.
    a, b = outcomes(80, 10, 2, 8)
    r = stats.paired_compare(a, b, labels=("mixed", "uniform"))
    assert r.only_a == 10 and r.only_b == 2 and r.n == 100
    assert r.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert r.acc_a == pytest.approx(90.0) and r.acc_b == pytest.approx(82.0)
    assert r.diff == pytest.approx(8.0)
    assert r.verdict == "mixed better"
    assert r.ci_low < r.diff < r.ci_high and r.ci_low > 0
    assert "McNemar" in str(r) and "mixed better" in str(r)


def test_identical_models_tie():
    a, _ = outcomes(987, 0, 0, 13)
    r = stats.paired_compare(a, a.copy())
    assert r.p_value == 1.0 and r.verdict == stats.TIE and r.diff == 0
    assert r.ci_low <= 0 <= r.ci_high


def test_one_image_in_a_thousand_is_a_tie():
    # 05's old "loss": 98.7 vs 98.8 % on 1,000 images.
    a, b = outcomes(985, 2, 3, 10)
    r = stats.paired_compare(a, b)
    assert r.diff == pytest.approx(-0.1)
    assert r.is_tie and r.ci_low < 0 < r.ci_high


def test_a_clear_difference_is_detected_both_ways():
    a, b = outcomes(580, 8, 400, 12)  # 58.8 vs 98.0 %
    assert stats.paired_compare(a, b, labels=("W3", "W4")).verdict == "W4 better"
    assert stats.paired_compare(b, a, labels=("W4", "W3")).verdict == "W4 better"


def test_newcombe_without_correlation_is_the_independent_score_interval():
    # With phi = 0 (a*d == b*c) method 10 reduces to the square-root combination of two Wilson
    # intervals (Newcombe's independent-samples method 10), computed here by hand.
    both, only_a, only_b, neither = 40, 20, 10, 5  # 40*5 == 20*10
    n = 75
    z = sps.norm.ppf(0.975)

    def wilson(k):
        p = k / n
        c = (2 * n * p + z * z) / (2 * (n + z * z))
        h = z * math.sqrt(4 * n * p * (1 - p) + z * z) / (2 * (n + z * z))
        return c - h, c + h

    p1, p2 = (both + only_a) / n, (both + only_b) / n
    (l1, u1), (l2, u2) = wilson(both + only_a), wilson(both + only_b)
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    r = stats.paired_compare(*outcomes(both, only_a, only_b, neither))
    assert r.ci_low == pytest.approx(100 * lo, rel=1e-9)
    assert r.ci_high == pytest.approx(100 * hi, rel=1e-9)


def test_newcombe_interval_covers_at_its_level():
    rng = np.random.default_rng(1)
    probs = [0.85, 0.06, 0.03, 0.06]  # both, only A, only B, neither: true diff 3 points
    hits = 0
    reps = 1500
    for _ in range(reps):
        k = rng.multinomial(300, probs)
        lo, hi = newcombe_interval(*map(int, k), 0.05)
        hits += lo <= 0.03 <= hi
    assert 0.925 <= hits / reps <= 0.975


def test_bootstrap_interval_agrees_with_newcombe_on_large_samples():
    a, b = outcomes(8000, 400, 250, 1350)
    nc = stats.paired_compare(a, b)
    bs = stats.paired_compare(a, b, ci="bootstrap", n_boot=4000, seed=3)
    assert bs.ci_method == "bootstrap"
    assert bs.ci_low == pytest.approx(nc.ci_low, abs=0.15)
    assert bs.ci_high == pytest.approx(nc.ci_high, abs=0.15)
    with pytest.raises(ValueError, match="ci must be"):
        stats.paired_compare(a, b, ci="wald")
    with pytest.raises(ValueError, match="n_boot"):
        stats.paired_compare(a, b, ci="bootstrap", n_boot=5)


def test_paired_table_and_tally():
    a, b = outcomes(80, 10, 2, 8)
    t = stats.paired_table([("x", a, "y", b), ("y", b, "x", a), ("x", a, "x2", a)])
    assert list(t["verdict"]) == ["x better", "x better", stats.TIE]
    tally = stats.tally_verdicts(t)
    assert tally.loc[0, ["pairs", "a_better", "b_better", "ties"]].tolist() == [3, 1, 1, 1]


def test_compare_to_uniform_pairs_rows_and_tests_them():
    ones = "1" * 90 + "0" * 10
    df = pd.DataFrame(dict(
        section=["v", "v", "v", "v"],
        method=["vanilla", "vanilla", "MixQuant + vanilla", "budget + vanilla"],
        weight_bits=[4.0, 3.0, 3.02, 2.5], act_bits=[pd.NA] * 4,
        top1=[90.0, 60.0, 89.0, 70.0], plan=["4x22", "3x22", "m", "b"]))
    masks = [ones, "1" * 60 + "0" * 40, "1" * 89 + "0" * 11, "1" * 70 + "0" * 30]
    t = stats.compare_to_uniform(df, masks)
    assert len(t) == 1  # the 2.5-bit row has no uniform row within 0.1 bit
    r = t.iloc[0]
    assert r["uniform_bits"] == 3.0 and r["verdict"].startswith("MixQuant + vanilla")
    assert r["only_a"] == 29 and r["only_b"] == 0
    with pytest.raises(ValueError, match="one entry per row"):
        stats.compare_to_uniform(df, masks[:2])


# ---------------------------------------------------------------------------- correlations


def layered_data(n_layers=22, n_bits=3, seed=0):
    rng = np.random.default_rng(seed)
    layer_effect = rng.normal(size=n_layers)
    clusters = np.repeat(np.arange(n_layers), n_bits)
    x = layer_effect[clusters] + 0.1 * rng.normal(size=clusters.size)
    y = layer_effect[clusters] + 0.8 * rng.normal(size=clusters.size)
    return x, y, clusters


def test_cluster_bootstrap_is_wider_than_the_row_bootstrap():
    x, y, clusters = layered_data()
    rho, lo, hi = stats.cluster_bootstrap_corr(x, y, clusters, seed=0)
    rho2, lo2, hi2 = stats.cluster_bootstrap_corr(x, y, None, seed=0)
    assert rho == pytest.approx(sps.spearmanr(x, y).statistic) == rho2
    assert lo < rho < hi
    assert hi - lo > 1.2 * (hi2 - lo2)  # rows of one layer are not independent


def test_cluster_bootstrap_handles_unequal_clusters_and_checks_input():
    x, y, clusters = layered_data()
    keep = np.ones(x.size, bool)
    keep[[0, 1, 5]] = False  # layers 0 and 1 lose rows
    rho, lo, hi = stats.cluster_bootstrap_corr(x[keep], y[keep], clusters[keep], seed=0)
    assert lo < rho < hi
    with pytest.raises(ValueError, match="clusters"):
        stats.cluster_bootstrap_corr(x, y, clusters[:-1])
    with pytest.raises(ValueError, match="finite"):
        stats.cluster_bootstrap_corr(np.r_[x[:-1], np.nan], y)
    with pytest.raises(ValueError, match="method"):
        stats.cluster_bootstrap_corr(x, y, method="kendall")


def test_compare_correlations_paired():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    good = y + 0.3 * rng.normal(size=200)
    bad = y + 3.0 * rng.normal(size=200)
    r = stats.compare_correlations(good, bad, y, labels=("good", "bad"))
    assert r.verdict == "good stronger" and r.ci_low > 0 and r.p_value < 0.01
    same = stats.compare_correlations(good, good + 1e-9 * rng.normal(size=200), y)
    assert same.verdict == stats.TIE
    assert "paired bootstrap" in str(r)


# ---------------------------------------------------------------------------- control plans


NUMEL = {f"l{i}": n for i, n in enumerate([432, 2304, 2304, 4608, 9216, 9216, 18432, 36864, 640])}


def test_decorrelated_plans_spread_independent_of_average():
    plans = control.decorrelated_plans(NUMEL, 400, seed=0)
    avg = np.array([control.plan_avg_bits(p, NUMEL) for p in plans])
    spread = np.array([np.std(list(p.values())) for p in plans])
    assert avg.min() < 3.5 and avg.max() > 6.5
    assert abs(sps.spearmanr(avg, spread).statistic) < 0.3
    assert spread.max() > 1.5 and spread.min() < 0.3
    fixed = control.decorrelated_plans(NUMEL, 5, fixed={"l0": 8}, seed=1)
    assert all(p["l0"] == 8 for p in fixed)
    again = control.decorrelated_plans(NUMEL, 3, seed=2)
    assert control.decorrelated_plans(NUMEL, 3, seed=2) == again


def test_random_plans_at_hit_the_average():
    plans = control.random_plans_at(NUMEL, 3.5, 50, fixed={"l0": 8, "l8": 8}, tol=0.05, seed=0)
    assert len(plans) == 50
    for p in plans:
        assert abs(control.plan_avg_bits(p, NUMEL) - 3.5) <= 0.05
        assert p["l0"] == 8 and p["l8"] == 8
    assert len({tuple(p.values()) for p in plans}) > 40  # they differ
    with pytest.raises(ValueError, match="reachable"):
        control.random_plans_at(NUMEL, 1.5, 3)
    with pytest.raises(ValueError, match="n must"):
        control.random_plans_at(NUMEL, 4, 0)


# ---------------------------------------------------------------------------- the law


def test_law_factors():
    assert stats.per_bit_factor(2) == pytest.approx((7 / 3) ** 2)  # 5.44
    assert stats.per_bit_factor(3) == pytest.approx((15 / 7) ** 2)  # 4.59
    assert round(stats.per_bit_factor(2), 2) == 5.44 and round(stats.per_bit_factor(3), 2) == 4.59
    np.testing.assert_allclose(stats.per_bit_factor(np.arange(2, 8)),
                               [stats.law_qe_ratio(b, b + 1) for b in range(2, 8)])
    assert stats.law_qe_ratio(8) == 1.0
    # The product of the per-bit factors from 8 down to b is the 8 -> b ratio.
    assert np.prod(stats.per_bit_factor(np.arange(2, 8))) == pytest.approx(
        stats.law_qe_ratio(2))
    with pytest.raises(ValueError, match="bits"):
        stats.per_bit_factor(0)


# ---------------------------------------------------------------------------- readings


def table_of(values, numel):
    names = tuple(f"l{i}" for i in range(len(values)))
    return QETable(names, (2, 4, 8), dict(zip(names, numel, strict=True)),
                   np.asarray(values, float))


def test_model_baseline_reading_by_hand():
    # Layer l0: large weights (QE 10x larger at every bit-width), l1 small.
    t = table_of([[160.0, 10.0, 1.0], [16.0, 1.0, 0.1]], numel=[100, 300])
    base = (100 * 1.0 + 300 * 0.1) / 400  # 0.325
    assert model_baseline_qe(t) == pytest.approx(base)
    p = mixquant_model_baseline(t, 4.0)  # threshold 1.3: l0 needs 8 bits, l1 gets 4
    assert p.bits == {"l0": 8, "l1": 4}
    assert p.meta["threshold"] == pytest.approx(1.3) and "alternative" in p.meta["reading"]
    assert mixquant(t, 4.0).bits == {"l0": 8, "l1": 8}  # our reading: QEM 4 keeps 8 bits here
    assert mixquant_model_baseline(t, 1e4).bits == {"l0": 2, "l1": 2}
    assert mixquant_model_baseline(t, 1e-3).bits == {"l0": 8, "l1": 8}  # none qualifies
    assert mixquant_model_baseline(t, 1e4, fixed={"l0": 8}).bits == {"l0": 8, "l1": 2}


@pytest.mark.parametrize("qem", [0, -1, float("nan"), float("inf")])
def test_model_baseline_reading_checks_qem(qem):
    t = table_of([[4.0, 2.0, 1.0]], numel=[10])
    with pytest.raises(ValueError, match="qem"):
        mixquant_model_baseline(t, qem)
    with pytest.raises(ValueError, match="baseline_bits"):
        mixquant_model_baseline(t, 2.0, baseline_bits=5)
    with pytest.raises(TypeError, match="QETable"):
        mixquant_model_baseline({"l0": 1}, 2.0)
