"""Unit tests for mixquant_lite.tutorial (small models and hand-made tables; seconds to run)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mixquant_lite import tutorial
from mixquant_lite.evaluation import evaluate
from mixquant_lite.quant import fake_quantize, qe


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()


def tiny_loader(model: nn.Module, n: int = 64) -> DataLoader:
    """Labels are the f32 model's own predictions: f32 accuracy is exactly 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return DataLoader(TensorDataset(x, y), batch_size=32)


class FakeTable:
    """Just enough of QETable for exhaustive_search / qe_ratio_frame."""

    def __init__(self, qe: dict[str, dict[int, float]], numel: dict[str, int]):
        self._qe = qe
        self.layers = list(qe)
        self.bits = sorted(next(iter(qe.values())))
        self.numel = numel

    def qe(self, layer, bits):
        return self._qe[layer][bits]


def fake_table(n_layers=3, seed=0) -> FakeTable:
    rng = np.random.default_rng(seed)
    qe_, numel = {}, {}
    for i in range(n_layers):
        base = float(rng.uniform(1e-6, 1e-5))
        tail = rng.uniform(1, 3)  # layers differ at low bits
        qe_[f"l{i}"] = {b: base * tutorial.law_qe_ratio(b) * (tail if b <= 3 else 1.0)
                        for b in range(2, 9)}
        numel[f"l{i}"] = int(rng.integers(10, 1000))
    return FakeTable(qe_, numel)


# --- seeds ------------------------------------------------------------------------------------

def test_seed_everything_repeats_draws():
    tutorial.seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    tutorial.seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --- single-layer sensitivity -----------------------------------------------------------------

def test_single_layer_sensitivity_matches_manual_and_leaves_model():
    model = tiny_model()
    loader = tiny_loader(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    df = tutorial.single_layer_sensitivity(model, loader, bits=(2, 16), layers=["0", "3"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert list(df.columns[:3]) == ["layer", "bits", "numel"]
    assert len(df) == 4 and df.attrs["fp_accuracy"] == 1.0
    # QE is the quantizer's QE of that layer's weight
    r = df[(df.layer == "3") & (df.bits == 2)].iloc[0]
    assert r.qe == pytest.approx(qe(model[3].weight, 2), rel=1e-12)
    assert r.qe_norm == pytest.approx(r.qe / model[3].weight.double().var(unbiased=False).item())
    # the accuracy is the one of the model with only that layer quantized
    m2 = tiny_model()
    with torch.no_grad():
        m2[3].weight.copy_(fake_quantize(m2[3].weight, 2))
    assert r.accuracy == evaluate(m2, loader)
    assert r["drop"] == pytest.approx(1.0 - r.accuracy)
    assert r.loss_increase == pytest.approx(r.loss - df.attrs["fp_loss"])
    assert r.loss_increase > 0
    # 16 bits changes nothing the argmax can see
    assert (df[df.bits == 16]["drop"].abs() < 1e-12).all()


def test_single_layer_sensitivity_unknown_layer():
    model = tiny_model()
    with pytest.raises(KeyError, match="no layer"):
        tutorial.single_layer_sensitivity(model, tiny_loader(model), layers=["nope"])


def test_accuracy_and_loss_matches_evaluate_and_cross_entropy():
    model = tiny_model()
    loader = tiny_loader(model)
    m2 = tiny_model(seed=5)
    acc, loss = tutorial.accuracy_and_loss(m2, loader)
    assert acc == evaluate(m2, loader)
    x, y = loader.dataset.tensors
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(m2(x), y).item()
    assert loss == pytest.approx(want, rel=1e-5)
    assert tutorial.accuracy_and_loss(model, loader)[0] == 1.0


# --- random plans -----------------------------------------------------------------------------

def test_random_plans_deterministic_and_spread():
    layers = [f"l{i}" for i in range(20)]
    p1 = tutorial.random_plans(layers, 50, seed=4)
    p2 = tutorial.random_plans(layers, 50, seed=4)
    assert p1 == p2 and len(p1) == 50
    assert tutorial.random_plans(layers, 50, seed=5) != p1
    assert all(set(p) == set(layers) and set(p.values()) <= set(range(2, 9)) for p in p1)
    means = [np.mean(list(p.values())) for p in p1]
    assert min(means) < 3.5 and max(means) > 7  # both aggressive and mild plans
    with pytest.raises(ValueError):
        tutorial.random_plans(layers, 0)


def test_evaluate_plans_summaries():
    model = tiny_model()
    loader = tiny_loader(model)
    plans = [{"0": 8, "3": 8}, {"0": 2, "3": 4}, {"0": 16, "3": 16}]
    df = tutorial.evaluate_plans(model, loader, plans)
    n0, n3 = model[0].weight.numel(), model[3].weight.numel()
    assert df.avg_bits[1] == pytest.approx((2 * n0 + 4 * n3) / (n0 + n3))
    assert df.size_bytes[1] == pytest.approx((2 * n0 + 4 * n3) / 8)
    want = qe(model[0].weight, 2) * n0 + qe(model[3].weight, 4) * n3
    assert df.total_sq_error[1] == pytest.approx(want, rel=1e-9)
    assert df.accuracy[2] == 1.0
    assert df.total_sq_error[0] < df.total_sq_error[1]
    # model untouched
    assert torch.equal(model[0].weight, tiny_model()[0].weight)


# --- Spearman + bootstrap ---------------------------------------------------------------------

def test_cluster_bootstrap_corr_monotone_and_reversed():
    x = np.arange(20.0)
    assert tutorial.cluster_bootstrap_corr(x, x**3, n_boot=300) == pytest.approx((1.0, 1.0, 1.0))
    assert tutorial.cluster_bootstrap_corr(x, -x, n_boot=300) == pytest.approx((-1.0, -1.0, -1.0))


def test_cluster_bootstrap_corr_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    rho, lo, hi = tutorial.cluster_bootstrap_corr(x, y, n_boot=2000, seed=1)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert lo < rho < hi and hi - lo < 0.6
    assert tutorial.cluster_bootstrap_corr(x, y, n_boot=2000, seed=1) == (rho, lo, hi)
    # independent data: the interval covers 0
    _, lo0, hi0 = tutorial.cluster_bootstrap_corr(rng.normal(size=40), rng.normal(size=40),
                                                  n_boot=2000)
    assert lo0 < 0 < hi0


def test_correlation_table_pooled_and_grouped():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"bits": np.repeat([2, 3], 30), "qe": rng.normal(size=60)})
    df["drop"] = df.qe + 0.1 * rng.normal(size=60)  # strongly related
    df["noise"] = rng.normal(size=60)  # unrelated
    t = tutorial.correlation_table(df, xs=["qe"], ys=["drop", "noise"], n_boot=500)
    assert list(t.subset) == ["all", "bits=2", "bits=3"] * 2
    assert list(t.n) == [60, 30, 30] * 2
    strong, weak = t[t.y == "drop"], t[t.y == "noise"]
    assert (strong.rho > 0.9).all() and strong.excludes_zero.all()
    assert not weak.excludes_zero.iloc[0]
    assert (t.lo <= t.rho).all() and (t.rho <= t.hi).all()


def test_describe_correlation():
    assert tutorial.describe_correlation(0.64, 0.44, 0.78) == (
        "rho = 0.64 [0.44, 0.78]: a positive relation")
    assert tutorial.describe_correlation(-0.5, -0.8, -0.1).endswith("a negative relation")
    assert tutorial.describe_correlation(0.2, -0.2, 0.6).endswith("indistinguishable from none")


def test_cluster_bootstrap_corr_input_errors():
    with pytest.raises(ValueError):
        tutorial.cluster_bootstrap_corr([1, 2], [1, 2])
    with pytest.raises(ValueError):
        tutorial.cluster_bootstrap_corr([1, 2, 3], [1, 2])


# --- QE ratios --------------------------------------------------------------------------------

def test_law_qe_ratio():
    assert tutorial.law_qe_ratio(8) == 1.0
    assert tutorial.law_qe_ratio(7) == pytest.approx((255 / 127) ** 2)
    np.testing.assert_allclose(tutorial.law_qe_ratio(np.array([2, 4])),
                               [(255 / 3) ** 2, (255 / 15) ** 2])


def test_qe_ratio_frame_on_a_gaussian_layer():
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    tab = FakeTable({"w": {b: qe(w, b) for b in range(2, 9)}}, {"w": w.numel()})
    r = tutorial.qe_ratio_frame(tab).set_index("bits")
    assert r.loc[8, "ratio"] == 1.0
    # many levels: the uniform law holds within a few %; at 2 bits a Gaussian deviates a lot
    assert abs(r.loc[6, "rel_dev"]) < 0.05
    assert abs(r.loc[2, "rel_dev"]) > 0.1


# --- exhaustive search ------------------------------------------------------------------------

def mixquant_rule(table, qem):
    out = {}
    for layer in table.layers:
        t = qem * table.qe(layer, 8)
        ok = [b for b in table.bits if table.qe(layer, b) <= t]
        out[layer] = min(ok) if ok else max(table.bits)
    return out


@pytest.mark.parametrize("qem", [1.0, 5.0, 30.0, 300.0, 1e4])
def test_exhaustive_agrees_with_rule(qem):
    tab = fake_table(4, seed=2)
    res = tutorial.exhaustive_search(tab, qem)
    assert res["n_plans"] == 7**4
    assert res["bits"] == mixquant_rule(tab, qem)
    assert res["seconds"] >= 0


def test_exhaustive_subset_and_errors():
    tab = fake_table(5)
    res = tutorial.exhaustive_search(tab, 20.0, layers=["l1", "l3"])
    assert res["n_plans"] == 49 and set(res["bits"]) == {"l1", "l3"}
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            tutorial.exhaustive_search(tab, bad)


# --- fits and timing --------------------------------------------------------------------------

def test_linear_fit():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    f = tutorial.linear_fit(x, 3 * x + 1)
    assert f["slope"] == pytest.approx(3) and f["intercept"] == pytest.approx(1)
    assert f["r2"] == pytest.approx(1)
    assert tutorial.linear_fit(x, [1.0, -1.0, 1.0, -1.0])["r2"] < 0.5


def test_time_call_returns_result():
    t, out = tutorial.time_call(lambda: 42, repeats=2)
    assert out == 42 and 0 <= t < 1


def test_count_weights_resnet20():
    from mixquant_lite.zoo.models import resnet20

    n_layers, n_weights = tutorial.count_weights(resnet20())
    assert n_layers == 22  # 19 convs + 2 projection shortcuts + fc
    assert 260_000 < n_weights < 275_000


@pytest.mark.slow
def test_time_qe_tables_small():
    from mixquant_lite.zoo.models import resnet20

    df = tutorial.time_qe_tables(["r20"], build=lambda n: resnet20(), n_qems=(1, 10))
    assert isinstance(df, pd.DataFrame)
    row = df.iloc[0]
    assert row.layers == 22 and row.table_s > 0 and row.search_s_10 > 0
    assert math.isnan(row.reference_s)


# --- budgets and lowering order ---------------------------------------------------------------

def test_lowering_order_matches_rule():
    tab = fake_table(6, seed=3)
    order = tutorial.lowering_order(tab)
    assert list(order.qem_below_baseline) == sorted(order.qem_below_baseline)
    assert set(order.layer) == set(tab.layers)
    for r in order.itertuples():
        for b in range(2, 8):
            q = getattr(r, f"qem_to_{b}")
            assert mixquant_rule(tab, q * (1 + 1e-12))[r.layer] <= b
            assert mixquant_rule(tab, q * (1 - 1e-9))[r.layer] > b
        assert r.qem_to_7 == r.qem_below_baseline
    assert order.predicted_to_4.iloc[0] == pytest.approx((255 / 15) ** 2)


def test_compare_at_budgets_tiny_model():
    from mixquant_lite.search import mixquant
    from mixquant_lite.table import qe_table

    model = tiny_model()
    loader = tiny_loader(model)
    table = qe_table(model)
    df = tutorial.compare_at_budgets(model, loader, table, avg_bits=(3, 4.5))
    assert list(df.method) == ["uniform", "mixquant", "budget", "mixquant", "budget"]
    assert (df.avg_bits <= df.target + 1e-9).all()
    assert df.avg_bits[0] == 3.0 and df.accuracy.between(0, 1).all()
    m = df.iloc[1]
    assert m.plan == mixquant(table, m.qem)
    # the budget plan has the least total squared error at its budget
    for _, g in df.groupby("target"):
        assert g[g.method == "budget"].total_sq_error.iloc[0] <= g.total_sq_error.min() + 1e-12
    with pytest.raises(ValueError):
        tutorial.compare_at_budgets(model, loader, table, avg_bits=(4,), methods=("nope",))


def test_evaluate_plans_accepts_bitplans_and_dedupes():
    from mixquant_lite.plan import BitPlan
    from mixquant_lite.table import qe_table

    model = tiny_model()
    loader = tiny_loader(model)
    table = qe_table(model)
    p3 = BitPlan.uniform(table, 3)
    df = tutorial.evaluate_plans(model, loader, [p3, dict(p3.bits), BitPlan.uniform(table, 2)])
    assert df.accuracy[0] == df.accuracy[1] == evaluate(p3.apply(model), loader)
    assert df.avg_bits[0] == p3.avg_bits and df.size_bytes[0] == p3.size_bytes
    assert df.total_sq_error[0] == pytest.approx(p3.squared_error(table), rel=1e-6)


def test_naive_qe_table_equals_qe_table():
    from mixquant_lite.table import qe_table
    from mixquant_lite.zoo.models import resnet20

    torch.manual_seed(0)
    m = resnet20()
    np.testing.assert_allclose(tutorial.naive_qe_table(m), qe_table(m).values, rtol=1e-6)
    assert tutorial.naive_qe_table(m, bits=(3,)).shape == (22, 1)


def test_exhaustive_scaling_counts_and_agrees():
    from mixquant_lite.table import qe_table
    from mixquant_lite.zoo.models import resnet20

    torch.manual_seed(0)
    table = qe_table(resnet20())
    df = tutorial.exhaustive_scaling(table, ks=(1, 2, 3), qem=300.0)
    assert list(df.exhaustive_plans) == [7, 49, 343]
    assert list(df.mixquant_lookups) == [7, 14, 21]
    assert df.agree.all()


# --- results tables ---------------------------------------------------------------------------

def results_frame() -> pd.DataFrame:
    rows = [
        ("vanilla", "FP32", 32.0, None, 98.9, "f32"),
        ("vanilla", "vanilla", 4.0, None, 98.1, "4x22"),
        ("vanilla", "vanilla", 3.0, None, 58.8, "3x22"),
        ("vanilla", "MixQuant + vanilla", 4.0, None, 98.1, "4x22"),
        ("vanilla", "budget + vanilla", 3.05, None, 80.0, "4x2 3x20"),
        ("vanilla", "MixQuant + vanilla", 3.5, None, 90.0, "4x11 3x11"),  # no uniform within 0.1
        ("brecq", "BRECQ", 3.0, None, 97.0, "8x2 3x20"),
        ("brecq", "BRECQ", 3.0, 8, 95.0, "8x2 3x20"),
        ("brecq", "MixQuant + BRECQ", 2.98, 8, 96.0, "8x2 3x19 2x1"),
        ("brecq", "budget + BRECQ", 3.0, None, 97.5, "8x2 4x1 3x18 2x1"),
    ]
    return pd.DataFrame(rows, columns=["section", "method", "weight_bits", "act_bits", "top1",
                                       "plan"]).astype({"act_bits": "Int64"})


def test_matched_comparison_pairs_like_with_like():
    m = tutorial.matched_comparison(results_frame())
    assert len(m) == 4
    first = m.iloc[0]
    assert (first.quantizer, first.search, first.same_plan, first.delta) == (
        "vanilla", "MixQuant", True, 0.0)
    second = m.iloc[1]
    assert second.uniform_bits == 3.0 and second.delta == pytest.approx(80.0 - 58.8)
    # the activation setting must match: A8 MixQuant+BRECQ pairs with the A8 BRECQ row
    a8 = m[(m.quantizer == "BRECQ") & (m.search == "MixQuant")].iloc[0]
    assert a8.act_bits == 8 and a8.uniform_top1 == 95.0 and a8.delta == pytest.approx(1.0)
    a32 = m[(m.quantizer == "BRECQ") & (m.search == "budget")].iloc[0]
    assert pd.isna(a32.act_bits) and a32.uniform_top1 == 97.0
    assert tutorial.matched_comparison(results_frame(), tol=0.01).shape[0] == 2


def test_read_results_roundtrip(tmp_path):
    import json

    df = results_frame()
    df.to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "x.json").write_text(json.dumps({"provenance": {"command": "c", "quick": True}}))
    got, prov = tutorial.read_results(tmp_path / "x")
    assert prov == {"command": "c", "quick": True}
    assert got.act_bits.dtype == "Int64" and len(got) == len(df)
    with pytest.raises(FileNotFoundError, match="mixquant-lite reproduce"):
        tutorial.read_results(tmp_path / "missing")


def test_summarize_pairs_and_unpaired():
    df = results_frame()
    t = tutorial.summarize_pairs(tutorial.matched_comparison(df)).set_index(["quantizer",
                                                                             "search"])
    assert t.loc[("vanilla", "MixQuant")].identical == 1
    assert t.loc[("vanilla", "MixQuant")].pairs == 1
    assert np.isnan(t.loc[("vanilla", "MixQuant")].mean_delta)
    assert t.loc[("vanilla", "budget")].wins == 1
    assert t.loc[("BRECQ", "MixQuant")].wins == 1 and t.loc[("BRECQ", "budget")].wins == 1
    un = tutorial.unpaired_rows(df)
    assert list(un.weight_bits) == [3.5] and un.method.iloc[0] == "MixQuant + vanilla"


def test_uniform_gap_interpolates_between_uniform_points():
    g = tutorial.uniform_gap(results_frame())
    v = g[(g.quantizer == "vanilla")].set_index("weight_bits")
    # 3.5 bits: halfway between uniform 3 (58.8) and 4 (98.1)
    assert v.loc[3.5, "uniform_curve"] == pytest.approx((58.8 + 98.1) / 2)
    assert v.loc[3.5, "gap"] == pytest.approx(90.0 - (58.8 + 98.1) / 2)
    assert v.loc[4.0, "gap"] == 0.0
    assert v.loc[3.5, "between"] and not v.loc[4.0, "between"]
    # a BRECQ row at 2.98 bits lies below the only A8 uniform point (3.0): outside, dropped
    b = g[g.quantizer == "BRECQ"]
    assert len(b) == 1 and b.search.iloc[0] == "budget" and b.gap.iloc[0] == pytest.approx(0.5)


def test_summarize_gaps():
    gaps = pd.DataFrame({
        "quantizer": ["vanilla"] * 4, "search": ["MixQuant"] * 3 + ["budget"],
        "gap": [1.0, 1e-9, -0.5, 2.0], "between": [True, True, True, False]})
    t = tutorial.summarize_gaps(gaps)
    assert len(t) == 1  # the budget row is on a uniform point
    r = t.iloc[0]
    assert (r.rows, r.above, r.on, r.below) == (3, 1, 1, 1)
    assert r.mean_gap == pytest.approx(0.5 / 3)


@pytest.mark.slow
def test_result_plots_label_axes_with_units():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixquant_lite.tutorial.plotting import plot_matched, plot_results

    df = results_frame()
    ax = plot_matched(tutorial.matched_comparison(df))
    assert "points" in ax.get_xlabel() and ax.get_title().startswith("3 pairs with different")
    ax = plot_results(df, "vanilla")
    assert "(bits)" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"vanilla", "FP32"}
    plt.close("all")


def test_search_and_quantizer_columns_both_ways():
    old = results_frame()
    new = tutorial.with_search_columns(old)
    assert list(new.search[:4]) == ["none", "uniform", "uniform", "MixQuant"]
    assert list(new.quantizer[:4]) == ["FP32", "vanilla", "vanilla", "vanilla"]
    two = new.drop(columns=["method"])  # what reproduce writes now
    back = tutorial.with_search_columns(two)
    assert list(back.method) == list(old.method)
    pd.testing.assert_frame_equal(tutorial.matched_comparison(two),
                                  tutorial.matched_comparison(old))


def test_old_module_paths_still_work():
    import mixquant_lite.tutorial as old_analysis
    import mixquant_lite.tutorial.plotting as old_plotting
    from mixquant_lite.tutorial import plotting

    assert old_analysis.matched_comparison is tutorial.matched_comparison
    assert old_plotting.plot_results is plotting.plot_results
    assert not hasattr(plotting, "plot_method_bars")


def test_core_imports_no_tutorial_module():
    import subprocess
    import sys

    code = ("import sys, mixquant_lite, mixquant_lite.recon, mixquant_lite.packing, "
            "mixquant_lite.search, mixquant_lite.cli; "
            "bad = [m for m in sys.modules if m.startswith('mixquant_lite.tutorial') "
            "or m in ('mixquant_lite.tutorial', 'mixquant_lite.tutorial.plotting')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
