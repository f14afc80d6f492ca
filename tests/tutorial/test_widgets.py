"""Unit tests for the functions behind the notebook widgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mixquant_lite.quant import qe
from mixquant_lite.tutorial.widgets import layer_roundoff


def hand_model() -> nn.Module:
    m = nn.Sequential(nn.Linear(6, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[-1.0, -0.4, 0.0, 0.6, 1.2, 2.0]]))
    return m


def test_layer_roundoff_hand_example():
    # range [-1, 2] at 2 bits: s = 3/3 = 1, z = 1, levels -1, 0, 1, 2
    d = layer_roundoff(hand_model(), "0", 2)
    assert d["scale"] == pytest.approx(1.0) and d["zero_point"] == 1
    np.testing.assert_allclose(d["levels"], [-1, 0, 1, 2], atol=1e-7)
    np.testing.assert_allclose(d["dequantized"], [-1, 0, 0, 1, 1, 2], atol=1e-7)
    np.testing.assert_allclose(d["error"], [0, 0.4, 0, 0.4, -0.2, 0], atol=1e-6)
    assert d["qe"] == pytest.approx(0.36 / 6, rel=1e-6)
    assert d["qe_uniform"] == pytest.approx(1 / 12)
    assert d["levels_used"] == 4 and d["numel"] == 6
    assert d["counts"].tolist() == [1, 2, 2, 1]


def test_layer_roundoff_matches_quantizer_and_uniform_law():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(16, 32, 3))
    w = m[0].weight
    for b in (2, 4, 8):
        d = layer_roundoff(m, "0", b)
        assert d["qe"] == pytest.approx(qe(w, b), rel=1e-9)
        assert np.all(np.abs(d["error"]) <= d["scale"] / 2 + 1e-6)
        assert d["levels_used"] <= 2**b and len(d["levels"]) == 2**b
    d8 = layer_roundoff(m, "0", 8)
    assert d8["qe"] == pytest.approx(d8["qe_uniform"], rel=0.1)


def test_layer_roundoff_per_channel():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 8, 3))
    d = layer_roundoff(m, "0", 3, per_channel=True)
    assert d["scale"].shape == (8,) and d["zero_point"].shape == (8,)
    assert d["qe"] == pytest.approx(qe(m[0].weight, 3, per_channel=True), rel=1e-9)
    assert d["qe"] < layer_roundoff(m, "0", 3)["qe"]
    assert 1 <= d["levels_used"] <= 8


def test_layer_roundoff_errors():
    with pytest.raises(KeyError):
        layer_roundoff(hand_model(), "missing", 4)
    with pytest.raises(ValueError):
        layer_roundoff(hand_model(), "0", 0)


def test_qem_view_is_the_mixquant_plan():
    from torch.utils.data import DataLoader, TensorDataset

    from mixquant_lite.evaluation import evaluate
    from mixquant_lite.search import mixquant
    from mixquant_lite.table import qe_table
    from mixquant_lite.tutorial.widgets import qem_view

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.randn(32, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, m(x).argmax(1).detach()), batch_size=16)
    table = qe_table(m)
    for qem in (1.0, 300.0, 1e4):
        v = qem_view(table, m, loader, qem)
        plan = mixquant(table, qem)
        assert v["bits"] == plan.bits and v["avg_bits"] == plan.avg_bits
        assert v["size_bytes"] == plan.size_bytes
        assert v["accuracy"] == evaluate(plan.apply(m), loader)
    assert qem_view(table, m, loader, 1.0)["accuracy"] == 1.0
    assert set(qem_view(table, m, None, 1.0)["bits"].values()) == {8}
    assert qem_view(table, m, None, 1e4)["avg_bits"] < 4
    with pytest.raises(ValueError):
        qem_view(table, m, None, 0.0)


# --- the controls (ipywidgets work without a front end: no comm, values still update) ---------

def small_setup():
    from torch.utils.data import DataLoader, TensorDataset

    from mixquant_lite.table import qe_table

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.randn(32, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, m(x).argmax(1).detach()), batch_size=16)
    return m, loader, qe_table(m)


def test_change_points_reach_every_plan_and_nothing_between():
    from mixquant_lite.search import mixquant
    from mixquant_lite.tutorial.widgets import qem_change_points

    m, _, table = small_setup()
    pts = qem_change_points(table)
    assert pts[0] == 1.0 and np.all(np.diff(pts) > 0)
    plans = [mixquant(table, q).bits for q in pts]
    assert all(a != b for a, b in zip(plans, plans[1:], strict=False))  # each point is a change
    # between two points (and beyond the last) the plan is the left point's plan
    rng = np.random.default_rng(0)
    for i, lo in enumerate(pts):
        hi = pts[i + 1] if i + 1 < len(pts) else lo * 10
        for q in rng.uniform(lo, hi, size=5):
            assert mixquant(table, float(q)).bits == plans[i]
    # a fine log grid finds no plan the points miss
    grid = {tuple(mixquant(table, float(q)).bits.values()) for q in np.logspace(0, 5, 4000)}
    assert grid <= {tuple(p.values()) for p in plans}
    # the printed value is the value: short decimals that parse back exactly
    from mixquant_lite.tutorial.widgets import QEMExplorer
    assert all(float(QEMExplorer.label(q)) == q for q in pts)


def test_qem_explorer_default_cache_and_text():
    from mixquant_lite.search import mixquant
    from mixquant_lite.tutorial.widgets import QEMExplorer

    m, loader, table = small_setup()
    ex = QEMExplorer(table, m, loader, qem=300.0)
    assert ex.qem in ex.points  # a value the slider can hold
    assert mixquant(table, ex.qem).bits == mixquant(table, 300.0).bits
    lo, hi = ex.interval(ex.qem)
    assert lo == ex.qem <= 300.0 < hi
    v1, cached1 = ex.view(ex.qem)
    v2, cached2 = ex.view((lo + hi) / 2 if np.isfinite(hi) else lo * 2)
    assert not cached1 and cached2 and ex.evaluations == 1
    assert v2["accuracy"] == v1["accuracy"]
    assert ex.text(ex.qem).startswith(f"QEM {ex.label(ex.qem)}: {v1['avg_bits']:.2f} average")
    with pytest.raises(ValueError, match="qem"):
        QEMExplorer(table, m, loader, qem=0.5)


def test_qem_widget_live_updates(monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from mixquant_lite.tutorial.widgets import STATIC_ENV, qem_widget

    monkeypatch.delenv(STATIC_ENV, raising=False)
    m, loader, table = small_setup()
    ex = qem_widget(table, m, loader, qem=300.0)
    assert ex.slider.continuous_update is False
    assert [v for _, v in ex.slider.options] == list(ex.points)
    assert ex.slider.value == ex.qem and ex.slider.label == ex.label(ex.qem)
    assert ex.status.value.startswith(f"showing QEM {ex.label(ex.qem)}")
    target = float(ex.points[-1])
    seen = []
    ex.status.observe(lambda ch: seen.append(ch["new"]), names="value")
    ex.slider.value = target  # what a release of the slider does
    # the front end is told "computing" before the evaluation starts, then what it shows
    assert seen[0].startswith(f"computing QEM {ex.label(target)}")
    assert seen[-1].startswith(f"showing QEM {ex.label(target)} (evaluated in")
    assert ex.qem == target and ex.status.value.startswith(f"showing QEM {ex.label(target)}")
    ex.slider.value = float(ex.points[0])
    ex.slider.value = target
    assert "cached plan" in ex.status.value
    assert f"QEM {ex.label(target)}:" in capsys.readouterr().out


def test_widgets_static_mode(monkeypatch, capsys):
    from mixquant_lite.tutorial.widgets import STATIC_ENV, qem_widget, roundoff_widget

    monkeypatch.setenv(STATIC_ENV, "1")
    m, loader, table = small_setup()
    ex = qem_widget(table, m, loader, qem=300.0)
    assert ex.box is None  # no widget was created
    out = capsys.readouterr().out
    assert f"QEM {ex.label(ex.qem)}:" in out and "Static snapshot" in out
    r = roundoff_widget(m, list(table.layers), bits=3)
    assert r.box is None and "Static snapshot (layer 0, 3 bits)" in capsys.readouterr().out


def test_roundoff_explorer_histogram_fits_small_layers():
    from mixquant_lite.tutorial.widgets import RoundoffExplorer

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 16, 3))  # 144 weights, like the ResNet-20 stem
    ex = RoundoffExplorer(m, ["0"], bits=8)
    for bits in (2, 5, 8):
        fig = ex.figure("0", bits)
        ax = fig.axes[1]
        tallest = max(p.get_height() for p in ax.patches)
        assert tallest <= ax.get_ylim()[1]
    with pytest.raises(ValueError, match="layer"):
        RoundoffExplorer(m, ["0"], layer="nope")
    with pytest.raises(ValueError, match="bits"):
        RoundoffExplorer(m, ["0"], bits=9)


def test_roundoff_widget_live(monkeypatch):
    pytest.importorskip("ipywidgets")
    from mixquant_lite.tutorial.widgets import STATIC_ENV, roundoff_widget

    monkeypatch.delenv(STATIC_ENV, raising=False)
    m, _, table = small_setup()
    r = roundoff_widget(m, list(table.layers), layer="3", bits=3)
    assert r.slider.continuous_update is False and r.dropdown.value == "3"
    r.slider.value = 6
    assert (r.layer, r.bits) == ("3", 6) and r.status.value == "showing 3 at 6 bits"
    r.dropdown.value = "0"
    assert (r.layer, r.bits) == ("0", 6)
