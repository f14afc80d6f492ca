"""Unit tests for the functions behind the notebook widgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mixquant_lite.quant import qe
from mixquant_lite.widgets import layer_roundoff


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

    from mixquant_lite.evaluate import evaluate
    from mixquant_lite.qe_table import qe_table
    from mixquant_lite.search import mixquant
    from mixquant_lite.widgets import qem_view

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
