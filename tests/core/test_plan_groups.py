"""BitPlan with per-group grids: spec validation, apply vs a naive per-group loop, the
per-channel fallback, true storage bits and the JSON round trip."""
import math

import pytest
import torch
from torch import nn

from mixquant_lite.groups import bits_per_weight
from mixquant_lite.plan import BitPlan
from mixquant_lite.qspec import QuantSpec
from mixquant_lite.quant import fake_quantize


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 16))


def _plan(model, spec, bits=3):
    layers = {"0": 4, "2": bits}
    numel = {k: dict(model.named_modules())[k].weight.numel() for k in layers}
    return BitPlan(layers, numel, spec).with_shapes(model)


def test_spec_validation():
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec("per_group")
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec("per_group", group_size=48)
    with pytest.raises(ValueError, match="per_group"):
        QuantSpec("per_channel", group_size=64)
    assert QuantSpec("per_group", group_size=64).to_dict()["group_size"] == 64
    assert "group_size" not in QuantSpec("per_channel").to_dict()


def test_apply_per_group_vs_naive_with_fallback():
    model = _model()
    plan = _plan(model, QuantSpec("per_group", group_size=32))
    assert plan.fallback_layers == ("0",)  # K = 27: no group size fits
    out = plan.apply(model)
    w = model[2].weight.detach()
    naive = torch.stack([torch.cat([fake_quantize(g, 3) for g in row.split(32)]) for row in w])
    assert torch.equal(out[2].weight, naive)
    assert torch.equal(out[0].weight, fake_quantize(model[0].weight, 4, per_channel=True))


def test_storage_counts_grids_and_fallback():
    model = _model()
    plan = _plan(model, QuantSpec("per_group", group_size=32))
    s = plan.storage()
    n0, n2 = 8 * 27, 16 * 288
    want = (n0 * bits_per_weight((8, 3, 3, 3), 4, "per_channel")
            + n2 * bits_per_weight((16, 288), 3, "per_group", 32))
    assert math.isclose(s["total_bits"], want)
    assert s["grid_bits"] == 8 * (32 + 4) + 16 * (288 // 32) * (32 + 3)
    assert plan.bits_per_weight > plan.avg_bits
    assert "with grids" in plan.summary()
    again = BitPlan.from_json(plan.to_json())
    assert again == plan and again.fallback_layers == ("0",)


def test_shapes_needed_and_checked():
    model = _model()
    plan = BitPlan({"2": 4}, {"2": 16 * 288}, QuantSpec("per_group", group_size=32))
    with pytest.raises(ValueError, match="with_shapes"):
        plan.storage()
    with pytest.raises(ValueError, match="with_shapes"):
        _ = plan.fallback_layers
    with pytest.raises(ValueError, match="numel"):
        BitPlan({"2": 4}, {"2": 10}, shapes={"2": (3, 4)})
    assert plan.with_shapes(model).shapes["2"] == (16, 288)
