"""Export what was evaluated: a BRECQ model written as its learned integer codes (and its MSE
grids) loads back to the same logits, bit for bit, on both shipped checkpoints."""
import pytest
import torch

from mixquant_lite import brecq, export, load_quantized
from mixquant_lite.packing import read_plan
from mixquant_lite.qspec import QuantSpec
from mixquant_lite.recon import fold_bn
from mixquant_lite.zoo.data import calibration_batch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # two short BRECQ runs


@pytest.mark.parametrize("name", ["resnet20_mnist5k", "mobilenetv2_mnist5k"])
def test_brecq_export_is_the_evaluated_model(name, request, tmp_path):
    model = request.getfixturevalue(name)
    calib = calibration_batch(32, seed=0)
    qmodel, report = brecq(model, calib, 3, iters=5, n_calib=32, batch_size=16, progress=False)
    plan = report.plan
    assert plan.spec == QuantSpec("per_tensor", "mse") and plan.bits == report.bits
    first, last = list(plan.bits)[0], list(plan.bits)[-1]
    assert dict(plan.fixed) == {first: 8, last: 8}
    for layer, iw in report.weights.items():  # the codes are the model's weights
        w = qmodel.get_submodule(layer).weight
        assert torch.equal(iw.dequantize(), w.detach().cpu()), layer
        assert 0 <= int(iw.codes.min()) and int(iw.codes.max()) <= 2**iw.bits - 1

    info = export(qmodel, plan, tmp_path / "q.safetensors", weights=report.weights)
    assert info.codes == sum(-(-plan.numel[k] * b // 8) for k, b in plan.bits.items())
    assert read_plan(info.path) == plan
    with pytest.raises(ValueError, match="folded"):
        load_quantized(info.path)
    back = load_quantized(info.path, model=fold_bn(model))
    x = calibration_batch(8, seed=1)
    with torch.no_grad():
        assert torch.equal(back(x), qmodel(x))
        # round-to-nearest on the same plan and grids is a different model
        rtn = plan.apply(fold_bn(model))
        assert not torch.equal(rtn(x), qmodel(x))


def test_cli_exports_a_brecq_run(tmp_path, capsys, resnet20_mnist5k):
    from mixquant_lite.cli import main

    plan_path, out = tmp_path / "plan.json", tmp_path / "q.safetensors"
    assert main(["search", "--qem", "300", "--first-last-bits", "8", "--json",
                 str(plan_path)]) == 0
    assert main(["export", "--plan", str(plan_path), "--out", str(out), "--brecq-iters", "2",
                 "--n-calib", "32"]) == 0
    text = capsys.readouterr().out
    assert "BRECQ (2 steps/unit)" in text and "mse ranges" in text
    assert "plan storage (codes + grids)" in text
    plan = read_plan(out)
    assert plan.spec.range_method == "mse" and plan.meta["quantizer"] == "BRECQ"
    back = load_quantized(out, model=fold_bn(resnet20_mnist5k))
    assert back(calibration_batch(2)).shape == (2, 10)
