"""The MixQuant rule (docs/method.md), sweeps, exact budget plans and BitPlan."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mixquant_lite.layers import quantizable_layers
from mixquant_lite.plan import BitPlan
from mixquant_lite.quant import fake_quantize
from mixquant_lite.search import mixquant, plan_for_budget, qem_for_budget, sweep
from mixquant_lite.table import QETable, qe_table
from mixquant_lite.zoo.models import resnet20

BITS = (2, 3, 4, 5, 6, 7, 8)

pytestmark = pytest.mark.usefixtures("one_thread")


def table_of(values, bits=BITS, numel=None) -> QETable:
    values = np.asarray(values, dtype=float)
    names = tuple(f"l{i}" for i in range(len(values)))
    numel = numel or [100] * len(values)
    return QETable(names, tuple(bits), dict(zip(names, numel, strict=True)), values)


def uniform_like(n_layers=3, bits=BITS) -> QETable:
    """QE ~ 4x per bit, layers alike up to a factor (docs/method.md, "QE")."""
    base = np.array([4.0 ** (8 - b) for b in bits])
    return table_of([base * (1 + 0.1 * i) for i in range(n_layers)], bits)


def spec_rule(table: QETable, qem: float, baseline: int = 8) -> dict:
    """The rule, word for word, in plain Python."""
    out = {}
    for layer in table.layers:
        t = qem * table.qe(layer, baseline)
        ok = [b for b in sorted(table.bits) if table.qe(layer, b) <= t]
        out[layer] = ok[0] if ok else max(table.bits)
    return out


@pytest.fixture(scope="module")
def r20_table():
    torch.manual_seed(0)
    return qe_table(resnet20())


# --------------------------------------------------------------------------- the rule


def test_qem_one_keeps_the_baseline(r20_table):
    assert set(mixquant(r20_table, 1.0).bits.values()) == {8}
    assert set(mixquant(r20_table, 1.0, baseline_bits=6).bits.values()) == {6}


@pytest.mark.parametrize("qem", [0.999, 0.5, 1e-9])
def test_qem_below_one_falls_back_to_the_largest_candidate(r20_table, qem):
    assert set(mixquant(r20_table, qem).bits.values()) == {8}
    # with candidates above the baseline, "none qualifies" still means the largest candidate
    t = uniform_like(bits=range(2, 11))
    assert set(mixquant(t, 1e-6, baseline_bits=8).bits.values()) == {10}


def test_larger_qem_fewer_bits():
    t = uniform_like()
    assert set(mixquant(t, 4.0).bits.values()) == {7}  # QE_7 = 4 QE_8 <= 4 QE_8: a tie qualifies
    assert set(mixquant(t, 3.99).bits.values()) == {8}
    assert set(mixquant(t, 16.0).bits.values()) == {6}
    assert set(mixquant(t, 1e9).bits.values()) == {2}


def test_exact_tie_qualifies():
    t = table_of([[8.0, 4.0, 2.0]], bits=(2, 4, 8))
    assert mixquant(t, 2.0).bits == {"l0": 4}  # QE_4 == 2 * QE_8 exactly
    assert mixquant(t, np.nextafter(2.0, 0)).bits == {"l0": 8}


def test_constant_layer_gets_the_smallest_candidate():
    t = table_of([[0.0] * 7, [4.0 ** (8 - b) for b in BITS]])
    assert mixquant(t, 1.0).bits == {"l0": 2, "l1": 8}


def test_fixed_layers(r20_table):
    names = r20_table.layers
    plan = mixquant(r20_table, 1e4, fixed={names[0]: 8, names[-1]: 8})
    assert plan.bits[names[0]] == 8 and plan.bits[names[-1]] == 8
    assert set(list(plan.bits.values())[1:-1]) == {2}
    assert list(plan.bits) == list(names)  # module order kept
    with pytest.raises(ValueError, match="'nope'"):
        mixquant(r20_table, 10, fixed={"nope": 8})
    with pytest.raises(ValueError, match="candidates"):
        mixquant(r20_table, 10, fixed={"fc": 16})
    with pytest.raises(ValueError, match="bits"):
        mixquant(r20_table, 10, fixed={"fc": 0})
    with pytest.raises(TypeError, match="fixed"):
        mixquant(r20_table, 10, fixed=[("fc", 8)])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_qem_value(r20_table, bad):
    with pytest.raises(ValueError, match="qem"):
        mixquant(r20_table, bad)


@pytest.mark.parametrize("bad", ["100", None, True, [1.0]])
def test_bad_qem_type(r20_table, bad):
    with pytest.raises(TypeError, match="qem"):
        mixquant(r20_table, bad)


def test_bad_baseline_and_table(r20_table):
    with pytest.raises(ValueError, match="baseline_bits"):
        mixquant(qe_table(resnet20(), bits=[2, 4]), 10)  # 8 is not a candidate
    with pytest.raises(ValueError, match="baseline_bits"):
        mixquant(r20_table, 10, baseline_bits=17)
    with pytest.raises(TypeError, match="QETable"):
        mixquant({"fc": {8: 1.0}}, 10)


@settings(max_examples=200, deadline=None)
@given(
    vals=st.lists(st.lists(st.floats(0, 1e3, allow_subnormal=False), min_size=7, max_size=7),
                  min_size=1, max_size=6),
    qem=st.floats(1e-3, 1e5),
    baseline=st.sampled_from(BITS),
)
@pytest.mark.slow
def test_rule_matches_the_spec_word_for_word(vals, qem, baseline):
    t = table_of(vals)
    assert mixquant(t, qem, baseline_bits=baseline).bits == spec_rule(t, qem, baseline)


@settings(max_examples=100, deadline=None)
@given(qems=st.lists(st.floats(1e-2, 1e6), min_size=2, max_size=5))
def test_bits_never_grow_with_qem(r20_table, qems):
    plans = [mixquant(r20_table, q) for q in sorted(qems)]
    for a, b in itertools.pairwise(plans):
        assert all(b.bits[k] <= a.bits[k] for k in a.bits)


# --------------------------------------------------------------------------- sweep


def test_sweep_reuses_the_table(r20_table):
    qems = [1, 10, 100, 1000, 10000]
    df = sweep(r20_table, qems)
    assert isinstance(df, pd.DataFrame) and list(df.index) == qems and df.index.name == "qem"
    assert {"avg_bits", "size_bytes", "compression", "sq_error", "plan"} <= set(df.columns)
    for q in qems:
        assert df.loc[q, "plan"] == mixquant(r20_table, q)
        assert df.loc[q, "avg_bits"] == df.loc[q, "plan"].avg_bits
    assert df["avg_bits"].is_monotonic_decreasing and df.loc[1, "avg_bits"] == 8
    with pytest.raises(ValueError, match="empty"):
        sweep(r20_table, [])
    with pytest.raises(ValueError, match="qem"):
        sweep(r20_table, [10, 0])


# --------------------------------------------------------------------------- budgets


def brute_force(t: QETable, limit_bits: float, fixed=None):
    """Least sum(numel * QE) with sum(numel * bits) <= limit_bits, by enumeration."""
    numel = t.numel_array()
    best = None
    choices = [[fixed[n]] if fixed and n in fixed else list(t.bits) for n in t.layers]
    for combo in itertools.product(*choices):
        if (numel * np.array(combo)).sum() <= limit_bits:
            cost = sum(t.numel[n] * t.qe(n, b) for n, b in zip(t.layers, combo, strict=True))
            if best is None or cost < best:
                best = cost
    return best


def test_plan_for_budget_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(25):
        n_layers = int(rng.integers(1, 5))
        bits = (2, 3, 4, 8)
        vals = np.sort(rng.random((n_layers, 4)) * 10 ** rng.uniform(-6, 0, (n_layers, 1)), 1)
        t = table_of(vals[:, ::-1], bits, [int(x) for x in rng.integers(1, 10_000, n_layers)])
        avg = float(rng.uniform(2.0, 8.0))
        best = brute_force(t, avg * t.total_numel)
        plan = plan_for_budget(t, avg_bits=avg)
        assert plan.avg_bits <= avg
        assert plan.squared_error(t) == pytest.approx(best, rel=1e-9)
        # the same budget in bytes
        plan_b = plan_for_budget(t, size_bytes=avg * t.total_numel / 8)
        assert plan_b.squared_error(t) == pytest.approx(best, rel=1e-9)


def test_plan_for_budget_on_a_real_table(r20_table):
    plan = plan_for_budget(r20_table, avg_bits=4.5)
    assert plan.avg_bits <= 4.5 and plan.meta["method"] == "plan_for_budget"
    # never worse than MixQuant at the same (or a smaller) storage
    q = qem_for_budget(r20_table, avg_bits=4.5)
    assert plan.squared_error(r20_table) <= mixquant(r20_table, q).squared_error(r20_table)
    # more budget, less error
    assert (plan_for_budget(r20_table, avg_bits=5.5).squared_error(r20_table)
            <= plan.squared_error(r20_table))
    assert set(plan_for_budget(r20_table, avg_bits=8).bits.values()) == {8}
    fixed = {"conv1": 8, "fc": 8}
    pf = plan_for_budget(r20_table, avg_bits=4.5, fixed=fixed)
    assert pf.bits["conv1"] == 8 and pf.bits["fc"] == 8 and pf.avg_bits <= 4.5


def test_infeasible_budget_names_the_smallest(r20_table):
    with pytest.raises(ValueError, match=r"avg_bits=1\.5.*smallest achievable is avg_bits=2"):
        plan_for_budget(r20_table, avg_bits=1.5)
    with pytest.raises(ValueError, match="size_bytes=100"):
        plan_for_budget(r20_table, size_bytes=100)
    with pytest.raises(ValueError, match="smallest achievable"):
        qem_for_budget(r20_table, avg_bits=1.9)
    with pytest.raises(ValueError, match="exactly one"):
        plan_for_budget(r20_table)
    with pytest.raises(ValueError, match="exactly one"):
        plan_for_budget(r20_table, avg_bits=4, size_bytes=1e5)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="avg_bits"):
            plan_for_budget(r20_table, avg_bits=bad)
    with pytest.raises(TypeError, match="avg_bits"):
        plan_for_budget(r20_table, avg_bits="4")


@pytest.mark.parametrize("avg", [2.0, 3.3, 4.5, 6.01, 8.0])
def test_qem_for_budget_finds_the_smallest_qem(r20_table, avg):
    q = qem_for_budget(r20_table, avg_bits=avg)
    assert mixquant(r20_table, q).avg_bits <= avg
    # any smaller QEM misses the budget (or changes nothing: q is a switching point)
    smaller = mixquant(r20_table, q * (1 - 1e-9))
    assert smaller.avg_bits > avg or smaller == mixquant(r20_table, q)


# --------------------------------------------------------------------------- BitPlan


def test_plan_summaries():
    p = BitPlan({"a": 2, "b": 8}, {"a": 300, "b": 100})
    assert p.total_bits == 300 * 2 + 100 * 8
    assert p.avg_bits == pytest.approx(1400 / 400)
    assert p.size_bytes == pytest.approx(1400 / 8)
    assert p.f32_bytes == 1600 and p.compression == pytest.approx(1600 / 175)
    assert "average 3.500 bits" in p.summary()
    assert list(p.to_frame().columns) == ["numel", "bits"]


def test_plan_json_round_trip(tmp_path, r20_table):
    p = mixquant(r20_table, 300)
    text = p.to_json()
    doc = json.loads(text)
    assert doc["format"] == "mixquant-lite/bitplan" and len(doc["layers"]) == 22
    q = BitPlan.from_json(text)
    assert q == p and q.avg_bits == p.avg_bits and q.meta["qem"] == 300
    path = tmp_path / "plan.json"
    p.to_json(path)
    assert BitPlan.from_json(path) == p and BitPlan.from_json(str(path)) == p
    with pytest.raises(ValueError, match="BitPlan"):
        BitPlan.from_json('{"a": 1}')
    with pytest.raises(ValueError, match="JSON"):
        BitPlan.from_json("{not json")


def test_plan_validation():
    with pytest.raises(ValueError, match="bits"):
        BitPlan({"a": 0}, {"a": 3})
    with pytest.raises(TypeError, match="bits"):
        BitPlan({"a": 2.5}, {"a": 3})
    with pytest.raises(ValueError, match="same layers"):
        BitPlan({"a": 2}, {"b": 3})
    with pytest.raises(ValueError, match="positive"):
        BitPlan({"a": 2}, {"a": 0})
    with pytest.raises(ValueError, match="at least one"):
        BitPlan({}, {})


def test_uniform_plan(r20_table):
    p = BitPlan.uniform(r20_table, 4)
    assert set(p.bits.values()) == {4} and p.avg_bits == 4
    assert p.numel == r20_table.numel


@pytest.mark.parametrize("per_channel", [False, True])
def test_apply_quantizes_a_copy(per_channel):
    torch.manual_seed(0)
    model = resnet20().eval()
    t = qe_table(model, per_channel=per_channel)
    plan = mixquant(t, 300)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = plan.apply(model)
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    for name, m in quantizable_layers(q):
        orig = model.get_submodule(name).weight
        assert torch.equal(m.weight, fake_quantize(orig, plan.bits[name], per_channel=per_channel))
        levels = torch.unique(m.weight.reshape(m.weight.shape[0], -1)[0]).numel()
        assert levels <= 2 ** plan.bits[name]
    assert torch.equal(q.fc.bias, model.fc.bias)
    assert torch.equal(q.bn1.weight, model.bn1.weight)
    with torch.no_grad():
        x = torch.randn(2, 1, 28, 28)
        assert torch.isfinite(q(x)).all()


def test_apply_checks_the_model(r20_table):
    plan = mixquant(r20_table, 10)
    with pytest.raises(ValueError, match="'conv1' of the plan is not in the model .nor are 21"):
        plan.apply(nn.Sequential(nn.Conv2d(1, 16, 3)))
    other = BitPlan({"conv1": 4}, {"conv1": 999})
    with pytest.raises(ValueError, match="'conv1' has 144 weights"):
        other.apply(resnet20())
    bn = BitPlan({"bn1": 4}, {"bn1": 16})
    with pytest.raises(ValueError, match="'bn1' is a BatchNorm2d"):
        bn.apply(resnet20())


def test_eight_bit_plan_keeps_the_output():
    torch.manual_seed(0)
    model = resnet20().eval()
    q = BitPlan.uniform(qe_table(model), 8).apply(model)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        a, b = model(x), q(x)
    assert (a - b).abs().max() <= 0.05 * a.abs().max()
    assert math.isfinite(float(b.sum()))


def test_plan_for_budget_takes_any_measure():
    """A sensitivity table (measure != "qe") is minimised as given, not weighted by numel."""
    import itertools

    names = ("a", "b", "c")
    numel = {"a": 10, "b": 1000, "c": 100}
    rng = np.random.default_rng(0)
    values = np.sort(rng.random((3, 3)), axis=1)[:, ::-1].copy()  # cost falls with bits
    bits = (2, 4, 8)
    for measure in ("qe", "hessian"):
        table = QETable(names, bits, numel, values, measure=measure)
        cost = table.cost_matrix()
        w = np.array([numel[n] for n in names], dtype=float)
        expected = values * w[:, None] if measure == "qe" else values
        np.testing.assert_allclose(cost, expected)
        for avg in (3.0, 4.5, 6.0):
            plan = plan_for_budget(table, avg_bits=avg)
            best = min(
                (sum(cost[i, j] for i, j in enumerate(c)), c)
                for c in itertools.product(range(3), repeat=3)
                if sum(w[i] * bits[j] for i, j in enumerate(c)) <= avg * w.sum()
            )
            got = sum(cost[i, bits.index(plan.bits[n])] for i, n in enumerate(names))
            assert got == pytest.approx(best[0])


def test_table_rejects_bad_values_and_measure():
    with pytest.raises(ValueError, match="finite"):
        QETable(("a",), (2,), {"a": 1}, np.array([[np.nan]]))
    with pytest.raises(ValueError, match="measure"):
        QETable(("a",), (2,), {"a": 1}, np.array([[1.0]]), measure="")


def test_mixquant_model_baseline_option():
    """baseline="model" (the alternative reading): one threshold QEM x weighted mean 8-bit QE."""
    names = ("big", "small")
    t = QETable(names, (2, 4, 8), {"big": 100, "small": 300},
                np.array([[160.0, 10.0, 1.0], [16.0, 1.0, 0.1]]))
    p = mixquant(t, 4.0, baseline="model")  # threshold 4 * 0.325 = 1.3
    assert p.bits == {"big": 8, "small": 4} and p.meta["threshold"] == pytest.approx(1.3)
    assert "alternative" in p.meta["reading"]
    assert mixquant(t, 4.0).bits == {"big": 8, "small": 8}  # the package's reading
    with pytest.raises(ValueError, match="baseline must be one of"):
        mixquant(t, 4.0, baseline="global")
    with pytest.raises(ValueError, match="measure"):
        mixquant(QETable(names, (2, 4, 8), {"big": 1, "small": 1}, t.values, measure="fisher"),
                 4.0, baseline="model")
