"""Integer export: bit packing, a round trip equal to plan.apply bit for bit on every shipped
checkpoint, file sizes against plan.size_bytes, errors, and the CLI command."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixquant_lite import BitPlan, mixquant
from mixquant_lite.packing import export, load_quantized, pack_bits, read_plan, unpack_bits
from mixquant_lite.table import qe_table
from mixquant_lite.zoo.models import load_manifest

pytestmark = pytest.mark.usefixtures("one_thread")
# the image checkpoints (the character GPT's export is not covered yet: token inputs)
SHIPPED = sorted(k for k, v in load_manifest()["checkpoints"].items() if v["arch"] != "chargpt")


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    n = data.draw(st.integers(0, 70))
    codes = np.array(data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=n, max_size=n)),
                     dtype=np.int64)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-n * bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits, n), codes)


def test_pack_refuses_codes_out_of_range():
    with pytest.raises(ValueError, match="0..7"):
        pack_bits(np.array([0, 8]), 3)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(np.zeros(1, np.uint8), 3, 3)


def _inputs(model: torch.nn.Module) -> torch.Tensor:
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, conv.in_channels, 28, 28, generator=g)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("per_channel", [False, True])
def test_round_trip_equals_plan_apply_bit_for_bit(name, per_channel, tmp_path, request):
    model = request.getfixturevalue(name.replace("-", "_"))  # one fixture per checkpoint
    table = qe_table(model, per_channel=per_channel)
    plan = mixquant(table, 300.0)  # a mixed plan
    assert len(set(plan.bits.values())) > 1
    info = export(model, plan, tmp_path / "q.safetensors")
    skeleton = copy.deepcopy(model)
    with torch.no_grad():  # the values must come from the file, not from the skeleton
        for p in skeleton.parameters():
            p.normal_()
    loaded = load_quantized(info.path, model=skeleton)
    ref = plan.apply(model).eval()
    x = _inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert read_plan(info.path) == plan
    # sizes: codes are plan.size_bytes up to byte padding per layer; grids add a little
    assert info.file == (tmp_path / "q.safetensors").stat().st_size
    assert info.file == info.codes + info.qparams + info.float_tensors + info.header
    assert plan.size_bytes <= info.codes < plan.size_bytes + len(plan.bits)
    # codes + grids are the plan's true storage (float32 step + b-bit zero per grid) up to the
    # byte padding of two packed streams per layer
    storage = plan.with_shapes(model).storage()
    assert info.plan_size_bytes == storage["size_bytes"]
    assert 0 <= info.codes + info.qparams - storage["size_bytes"] < 2 * len(plan.bits)


def test_resnet20_rebuilt_from_the_file_alone(tmp_path, resnet20_mnist5k):
    model = resnet20_mnist5k
    plan = BitPlan.uniform(qe_table(model, bits=[4]), 4)
    info = export(model, plan, tmp_path / "r20.safetensors")
    loaded = load_quantized(info.path)  # architecture recorded as "resnet20"
    x = _inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), plan.apply(model).eval()(x))
    w = loaded.get_submodule("layer2.0.conv1").weight
    assert w.unique().numel() <= 16


def test_export_errors(tmp_path, resnet20_mnist5k):
    model = resnet20_mnist5k
    plan = BitPlan({"nope": 4}, {"nope": 10})
    with pytest.raises(ValueError, match="'nope'"):
        export(model, plan, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(TypeError, match="BitPlan"):
        export(model, {"conv1": 4}, tmp_path / "x.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_quantized(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        load_quantized(tmp_path / "missing.safetensors")


def test_cli_export(tmp_path, capsys, resnet20_mnist5k):
    from mixquant_lite.cli import main

    plan_path = tmp_path / "plan.json"
    assert main(["search", "--qem", "300", "--json", str(plan_path)]) == 0
    out = tmp_path / "q.safetensors"
    assert main(["export", "--plan", str(plan_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scales/zero points" in text and out.is_file()
    model = resnet20_mnist5k
    x = _inputs(model)
    with torch.no_grad():
        ref = BitPlan.from_json(plan_path).apply(model).eval()(x)
        assert torch.equal(load_quantized(out)(x), ref)
    assert main(["export", "--plan", str(tmp_path / "none.json"), "--out", str(out)]) == 2
