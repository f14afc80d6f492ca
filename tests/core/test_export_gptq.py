"""Export of GPTQ's integers and of per-group grids: ``load_quantized`` reproduces a GPTQ model
bit for bit on both shipped CNNs (per channel, and per group with per-channel fallback layers),
and per-group round-to-nearest export equals a naive group-by-group quantizer exactly."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mixquant_lite import BitPlan
from mixquant_lite.gptq import gptq
from mixquant_lite.packing import export, load_quantized, read_plan
from mixquant_lite.qspec import QuantSpec
from mixquant_lite.quant import fake_quantize
from mixquant_lite.table import qe_table
from mixquant_lite.zoo.data import calibration_batch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("spec", [QuantSpec("per_channel"),
                                  QuantSpec("per_group", group_size=32)],
                         ids=["per_channel", "per_group32"])
@pytest.mark.parametrize("name", ["resnet20_mnist5k", "mobilenetv2_mnist5k"])
def test_gptq_export_reproduces_the_model_bit_for_bit(name, spec, request, tmp_path):
    model = request.getfixturevalue(name)
    plan = BitPlan.uniform(qe_table(model, bits=[3], per_channel=True), 3).with_spec(spec)
    plan = plan.with_shapes(model)
    qmodel, report = gptq(model, calibration_batch(16, seed=0), plan)
    assert report.fallback == list(plan.fallback_layers)
    if spec.group_size:  # some layers fit g = 32 (K = 32 * 9), stems and depthwise ones do not
        assert 0 < len(report.fallback) < len(plan.bits)
    assert report.avg_bits == pytest.approx(plan.bits_per_weight)
    info = export(model, plan, tmp_path / "g.safetensors", weights=report.weights)
    back = load_quantized(info.path, model=model)  # MobileNetV2 records no architecture
    x = calibration_batch(8, seed=1)
    with torch.no_grad():
        assert torch.equal(back(x), qmodel(x))
    for k, v in qmodel.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert read_plan(info.path) == plan
    assert 0 <= info.quantized_overhead < 2 * len(plan.bits) / info.plan_size_bytes


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 4), n_groups=st.integers(1, 3), g=st.sampled_from([32, 64, 128]),
       bits=st.integers(2, 8), seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_per_group_rtn_export_equals_a_naive_group_loop(c, n_groups, g, bits, seed, scale):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_groups * g, c), nn.Linear(c, 2))  # "1": K = c, fallback
    with torch.no_grad():
        model[0].weight.mul_(scale)
    spec = QuantSpec("per_group", group_size=g)
    plan = BitPlan({"0": bits, "1": bits}, {"0": c * n_groups * g, "1": 2 * c}, spec)
    with tempfile.TemporaryDirectory() as d:
        info = export(model, plan, Path(d) / "q.safetensors")
        back = load_quantized(info.path, model=model)
    w = model[0].weight.detach()
    naive = torch.stack([torch.cat([fake_quantize(grp, bits) for grp in row.split(g)])
                         for row in w])
    assert torch.equal(back[0].weight, naive)
    assert torch.equal(back[1].weight, fake_quantize(model[1].weight, bits, per_channel=True))
    assert torch.equal(back[0].weight, plan.apply(model)[0].weight)


def test_cli_export_gptq_per_group(tmp_path, resnet20_mnist5k, capsys):
    from mixquant_lite import cli
    from mixquant_lite.recon import fold_bn

    model = resnet20_mnist5k
    plan_path, out = tmp_path / "plan.json", tmp_path / "g.safetensors"
    BitPlan.uniform(qe_table(model, bits=[4], per_channel=True), 4).to_json(plan_path)
    assert cli.main(["export", "--plan", str(plan_path), "--out", str(out), "--gptq",
                     "--group-size", "32", "--n-calib", "32"]) == 0
    assert "GPTQ (32 calibration images)" in capsys.readouterr().out
    stored = read_plan(out)
    assert stored.spec == QuantSpec("per_group", group_size=32)
    folded = fold_bn(model)
    want, _ = gptq(folded, calibration_batch(32).split(32), stored.with_shapes(folded))
    back = load_quantized(out, model=folded)
    x = calibration_batch(8, seed=1)
    with torch.no_grad():
        assert torch.equal(back(x), want(x))
    assert cli.main(["export", "--plan", str(plan_path), "--out", str(out), "--gptq",
                     "--brecq-iters", "2"]) == 2
