"""BRECQ adaptor: BN folding, AdaRound, activation quantizer, block reconstruction, API checks.

Fast tests use random models, tiny iteration counts and small calibration sets. The accuracy test
(``slow``) needs the shipped ResNet-20 checkpoint.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from mixquant_lite.quant import choose_qparams, fake_quantize, fake_quantize_affine
from mixquant_lite.recon import (
    ActQuantizer,
    AdaRoundQuantizer,
    BrecqReport,
    LinearTempDecay,
    brecq,
    find_units,
    fold_bn,
    quantizable_layer_names,
)
from mixquant_lite.zoo.models import resnet20

FAST = dict(iters=5, n_calib=32, batch_size=8, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are small: one thread is as fast as two on an idle machine and avoids
    oversubscription (a 5-10x slow-down) when other processes share the CPU cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def r20() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(resnet20())


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _tiny_bottleneck_net() -> nn.Module:
    """Stem + two torchvision Bottlenecks (one with a downsample) + head, in a Sequential."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Bottleneck(16, 4),
        Bottleneck(16, 8, stride=2,
                   downsample=nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False),
                                            nn.BatchNorm2d(32))),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    return _randomize_bn(net)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


# --------------------------------------------------------------------------- BN folding


def test_fold_bn_resnet20_same_output_and_names(r20, calib):
    folded = fold_bn(r20)
    with torch.no_grad():
        torch.testing.assert_close(folded(calib), r20(calib), rtol=1e-4, atol=1e-4)
    assert quantizable_layer_names(folded) == quantizable_layer_names(r20)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in r20.modules())  # caller's model untouched
    assert folded.layer2[0].downsample[0].bias is not None


@pytest.mark.slow
def test_fold_bn_torchvision_and_bottleneck():
    import torchvision

    for net, x in (
        (_randomize_bn(torchvision.models.resnet18(weights=None)), torch.randn(2, 3, 64, 64)),
        (_tiny_bottleneck_net(), torch.randn(2, 3, 16, 16)),
    ):
        folded = fold_bn(net)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


# --------------------------------------------------------------------------- AdaRound


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("range_method", ["minmax", "mse"])
def test_adaround_init_and_grid(per_channel, range_method):
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    q = AdaRoundQuantizer(w, 3, per_channel=per_channel, range_method=range_method)
    # Soft start: h(V) equals the fractional part, so the soft weight is w (inside the range).
    z = q.zero_point.float().reshape(-1, 1, 1, 1) if per_channel else q.zero_point.float()
    s = q.scale.reshape(-1, 1, 1, 1) if per_channel else q.scale
    lo, hi = (0 - z) * s, (q.qmax - z) * s
    inside = (w >= lo) & (w <= hi)
    torch.testing.assert_close(q()[inside], w[inside], rtol=0, atol=1e-5)
    q.harden()
    hard = q()
    groups = hard.reshape(8, -1) if per_channel else hard.reshape(1, -1)
    assert all(g.unique().numel() <= 2**3 for g in groups)
    codes = q.integer()
    assert codes.min() >= 0 and codes.max() <= 7
    z = q.zero_point.float().reshape(-1, 1, 1, 1) if per_channel else q.zero_point.float()
    s = q.scale.reshape(-1, 1, 1, 1) if per_channel else q.scale
    torch.testing.assert_close(hard, (codes - z) * s)


def test_adaround_minmax_grid_is_the_qe_grid():
    w = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    q = AdaRoundQuantizer(w, 4, range_method="minmax")
    assert torch.equal(q.nearest(), fake_quantize(w, 4))


@pytest.mark.parametrize("range_method", ["minmax", "mse"])
def test_adaround_nearest_is_the_fused_quantizer_on_real_weights(range_method):
    """One quantizer: AdaRound's round-to-nearest is fake_quantize_affine bit for bit (they used
    to disagree where W / s and W * (1/s) round differently, and at exact half steps)."""
    from mixquant_lite.zoo.models import load_pretrained

    model = load_pretrained("resnet20-mnist5k")
    for name in quantizable_layer_names(model):
        w = model.get_submodule(name).weight.detach()
        for bits, pc in ((2, False), (3, True), (8, False)):
            q = AdaRoundQuantizer(w, bits, per_channel=pc, range_method=range_method)
            s, z = choose_qparams(w, bits, "per_channel" if pc else "per_tensor", range_method)
            assert torch.equal(q.nearest(), fake_quantize_affine(w, s, z, bits)), name
            q.set_nearest()
            q.harden()
            assert torch.equal(q(), q.nearest()), name


def test_act_quantizer_learned_step_equals_the_fused_kernel():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(4)).relu()
    a = ActQuantizer(4)
    out = a(x)  # initialises, with the differentiable path (delta requires grad)
    out.sum().backward()
    assert a.delta.grad is not None and torch.isfinite(a.delta.grad)
    s, z = choose_qparams(x, 4, "per_tensor", "mse")
    assert torch.equal(out.detach(), fake_quantize_affine(x, s, z, 4))
    with torch.no_grad():
        assert torch.equal(a(x), out.detach())


def test_linear_temp_decay():
    d = LinearTempDecay(1000, warmup=0.2, start=20, end=2)
    assert d(0) == 20 and d(199) == 20 and d(200) == 20
    assert d(600) == pytest.approx(11.0)
    assert d(1000) == pytest.approx(2.0)


@pytest.mark.slow
def test_beta_schedule_matches_official_counter(monkeypatch):
    """The official BRECQ loss increments its counter before use (t = 1..iters): the regulariser
    starts at 0-based step warmup*iters - 1 and beta is exactly `end` at the last step."""
    import mixquant_lite.recon.block_recon as br

    seen: list[float] = []
    orig = br.AdaRoundQuantizer.rounding_reg

    def spy(self, beta, h=None):
        seen.append(float(beta))
        return orig(self, beta, h)

    monkeypatch.setattr(br.AdaRoundQuantizer, "rounding_reg", spy)
    net = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    x = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    brecq(net, x, 2, iters=500, n_calib=16, batch_size=8, first_last_bits=None,
          fold_batchnorm=False, keep_better=False, progress=False)
    assert len(seen) == 500 - 99  # steps 99..499 (t = 100..500) carry the regulariser
    assert seen[-1] == pytest.approx(2.0, abs=1e-12)
    assert seen[0] == pytest.approx(20.0)


def test_stem_is_not_reconstructed_by_default():
    """As the official code: with first_last_bits the stem is rounded to nearest, never learned."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, rep = brecq(net, x, 3, iters=20, n_calib=32, batch_size=8, fold_batchnorm=False,
                   keep_better=False, progress=False)
    assert rep.units[0].name == "0" and rep.units[0].iters == 0
    assert rep.units[0].rounding == "nearest"
    assert rep.units[1].iters == 20 and rep.units[1].rounding == "learned"
    _, rep = brecq(net, x, 3, iters=20, n_calib=32, batch_size=8, fold_batchnorm=False,
                   keep_better=False, progress=False, reconstruct_first=True)
    assert rep.units[0].iters == 20 and rep.units[0].rounding == "learned"


@pytest.mark.slow
def test_adaround_beats_round_to_nearest_layer_output():
    """Layer-wise: AdaRound's output MSE on calibration data is below round-to-nearest's.

    Real (spatially correlated) MNIST images: with white-noise inputs round-to-nearest is already
    optimal for the output MSE, and there would be nothing to learn.
    """
    from mixquant_lite.zoo.data import calibration_batch

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 5)).eval()
    x = calibration_batch(256, seed=0)
    for bits in (2, 3):
        q, rep = brecq(net, x, bits, iters=300, n_calib=256, first_last_bits=None,
                       weight_range="minmax", fold_batchnorm=False, keep_better=False,
                       progress=False)
        conv_q, conv = q[0], net[0]
        with torch.no_grad():
            ref = conv(x)
            ada = ((conv_q(x) - ref) ** 2).mean().item()
            w_rtn = fake_quantize(conv.weight, bits)
            rtn = ((nn.functional.conv2d(x, w_rtn, conv.bias) - ref) ** 2)
            rtn = rtn.mean().item()
        assert ada < 0.95 * rtn, (bits, ada, rtn)
        # The report tells the same story (same inputs, same grid).
        unit = rep.units[0]
        assert unit.rounding == "learned"
        assert unit.loss_before == pytest.approx(rtn, rel=1e-3)
        assert unit.loss_after == pytest.approx(ada, rel=1e-3)


def test_keep_better_falls_back_to_nearest():
    """With white-noise inputs round-to-nearest is optimal; a short noisy run is not kept."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2000, 10)).eval()
    x = torch.relu(torch.randn(64, 2000, generator=torch.Generator().manual_seed(4)))
    q, rep = brecq(net, x, 2, iters=30, n_calib=64, first_last_bits=None, weight_range="minmax",
                   fold_batchnorm=False, progress=False)
    unit = rep.units[0]
    assert unit.loss_after <= unit.loss_before
    if unit.rounding == "nearest (fallback)":
        torch.testing.assert_close(q[1].weight, fake_quantize(net[1].weight, 2), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- activations


def test_act_quantizer_init_and_gradient():
    x = torch.relu(torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(5)))
    aq = ActQuantizer(4)
    y = aq(x)
    assert bool(aq.initialized) and aq.zero_point.item() == 0.0
    assert y.unique().numel() <= 16
    assert ((y - x) ** 2).mean() < ((x - 0) ** 2).mean() * 0.05
    (y.sum()).backward()
    assert aq.delta.grad is not None and torch.isfinite(aq.delta.grad)
    with pytest.raises(ValueError):
        ActQuantizer(0)


# --------------------------------------------------------------------------- brecq API


def test_units_of_resnet20(r20):
    units = find_units(r20)
    names = [u.name for u in units]
    assert names[0] == "conv1" and names[-1] == "fc" and len(units) == 11
    assert all(u.kind == "block" for u in units[1:-1])
    assert ("layer2.0.downsample.0", "downsample.0") in units[4].layers


@pytest.mark.slow
def test_brecq_mixed_plan_weights_on_grid(r20, calib):
    names = quantizable_layer_names(r20)
    plan = {n: 2 + i % 5 for i, n in enumerate(names)}  # 2..6 bits, mixed
    plan["conv1"] = plan["fc"] = 8  # the recipe's first/last bits, explicit in the plan
    for per_channel in (False, True):
        q, rep = brecq(r20, calib, plan, per_channel=per_channel, **FAST)
        assert isinstance(rep, BrecqReport)
        assert rep.bits["conv1"] == 8 and rep.bits["fc"] == 8  # first/last at 8 by default
        for n, w in _weights(q).items():
            b = rep.bits[n]
            groups = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
            assert max(g.unique().numel() for g in groups) <= 2**b, n
            if n not in ("conv1", "fc"):
                assert b == plan[n]
    frame = rep.to_frame()
    assert list(frame["name"])[:2] == ["conv1", "layer1.0"] and len(frame) == 11
    assert {"loss_before", "loss_after", "seconds", "weight_bits"} <= set(frame.columns)
    assert "BRECQ" in str(rep)


@pytest.mark.slow
def test_brecq_plan_objects_and_first_last(r20, calib):
    names = quantizable_layer_names(r20)

    class Plan:  # duck typing: anything with a .bits dict
        bits = dict.fromkeys(names, 4)

    _, rep = brecq(r20, calib, Plan(), first_last_bits=None, **FAST)
    assert set(rep.bits.values()) == {4} and rep.settings["per_channel"] is False
    Plan.per_channel = True  # a plan measured per channel is quantized per channel
    q, rep = brecq(r20, calib, Plan(), first_last_bits=None, **FAST)
    assert rep.settings["per_channel"] is True
    w = q.layer3[0].conv1.weight.reshape(64, -1)
    assert max(row.unique().numel() for row in w) <= 16 < w.unique().numel()
    assert rep.avg_bits == pytest.approx(4.0)
    assert rep.size_bytes == pytest.approx(sum(w.numel() for w in _weights(r20).values()) / 2)
    # A plan is never rewritten at its first/last layers: an explicit error says how to fix it.
    with pytest.raises(ValueError, match=r"fixed=\{'conv1': 8, 'fc': 8\}"):
        brecq(r20, calib, Plan.bits, **FAST)
    _, rep = brecq(r20, calib, 4, **FAST)  # an int: first/last at first_last_bits
    assert rep.bits["conv1"] == 8 and rep.bits["fc"] == 8 and rep.bits["layer1.0.conv1"] == 4


def test_brecq_config_is_frozen_validated_and_recorded(r20, calib):
    import dataclasses

    from mixquant_lite.recon import BrecqConfig

    cfg = BrecqConfig(**FAST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.iters = 3  # type: ignore[misc]
    for bad in (dict(iters=-1), dict(n_calib=0), dict(batch_size=64, n_calib=32),
                dict(act_bits=0), dict(first_last_bits=17), dict(weight_range="p99"),
                dict(warmup=1.0), dict(lr=0.0), dict(beta=(20.0,)), dict(reg_weight=-1.0),
                dict(keep_better="yes")):
        with pytest.raises(ValueError):
            BrecqConfig(**bad)
    _, rep = brecq(r20, calib, 3, cfg, act_bits=4)
    assert rep.config == dataclasses.replace(cfg, act_bits=4, per_channel=False)
    assert rep.settings["act_bits"] == 4 and rep.settings["iters"] == FAST["iters"]
    with pytest.raises(TypeError, match="unknown settings"):
        brecq(r20, calib, 3, cfg, itters=3)
    with pytest.raises(TypeError, match="unknown settings"):
        brecq(r20, calib, 3, cfg, fold_bn=True)  # removed in 0.2: fold_batchnorm=


@pytest.mark.slow
def test_brecq_leaves_callers_model_unchanged(r20, calib):
    before = copy.deepcopy(r20.state_dict())
    r20.train()
    try:
        q, _ = brecq(r20, calib, 2, act_bits=4, **FAST)
        assert r20.training
    finally:
        r20.eval()
    after = r20.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in r20.modules())
    assert all(p.requires_grad for p in r20.parameters())
    assert q is not r20 and not q.training


@pytest.mark.slow
def test_brecq_torchvision_resnet18_with_activations():
    import torchvision

    net = _randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10))
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    q, rep = brecq(net, x, 4, act_bits=4, iters=2, n_calib=8, batch_size=4, progress=False)
    assert [u.name for u in rep.units] == ["conv1"] + [
        f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["fc"]
    assert rep.units[0].act_bits is None  # the image stays float
    assert rep.units[1].act_bits == 8 and rep.units[-1].act_bits == 8  # after first / before last
    assert rep.units[2].act_bits == 4
    assert hasattr(q.layer1[1], "input_quantizer") and hasattr(q.layer1[1].conv2, "input_quantizer")
    with torch.no_grad():
        out = q(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    # A quantized model with activation quantizers deep-copies and pickles.
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(q)(x), out)
    buf = io.BytesIO()
    torch.save(q, buf)
    pickle.loads(pickle.dumps(q))


def test_brecq_bottleneck_and_generic_layers():
    net = _tiny_bottleneck_net()
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    q, rep = brecq(net, x, 3, act_bits=6, **FAST)
    assert [(u.name, u.kind) for u in rep.units] == [
        ("0", "layer"), ("3", "block"), ("4", "block"), ("7", "layer")]
    assert rep.units[2].layers == ("4.conv1", "4.conv2", "4.conv3", "4.downsample.0")
    for n, w in _weights(q).items():
        assert w.unique().numel() <= 2 ** rep.bits[n]


def test_brecq_layerwise_fallback_without_blocks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 24 * 24, 3)).eval()
    x = torch.randn(32, 1, 28, 28)
    q, rep = brecq(net, x, 2, **FAST)
    assert [u.kind for u in rep.units] == ["layer"] * 3
    assert rep.bits == {"0": 8, "2": 2, "5": 8}


def _tiny_mobilenet_v2():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.MobileNetV2(
        num_classes=10, inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2]])
    return _randomize_bn(net)


def test_units_of_mobilenet_v2():
    from mixquant_lite.layers import block_spec, first_last_layers

    net = _tiny_mobilenet_v2()
    units = find_units(net)
    assert [(u.name, u.kind) for u in units] == [
        ("features.0.0", "layer"), ("features.1", "block"), ("features.2", "block"),
        ("features.3", "block"), ("features.4.0", "layer"), ("classifier.1", "layer")]
    assert first_last_layers(net) == ("features.0.0", "classifier.1")
    # expansion 1: depthwise then projection; expansion 6: expand, depthwise, projection
    assert block_spec(net.features[1]).mid_inputs(net.features[1]) == ("conv.1",)
    assert block_spec(net.features[2]).mid_inputs(net.features[2]) == ("conv.1.0", "conv.2")


def test_brecq_mobilenet_v2_inverted_residual_blocks():
    """torchvision's InvertedResidual is reconstructed as one unit, like a BasicBlock, with its
    intermediate (post-ReLU6) activations quantized."""
    net = _tiny_mobilenet_v2()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    q, rep = brecq(net, x, 3, act_bits=6, **FAST)
    assert [u.kind for u in rep.units] == ["layer", "block", "block", "block", "layer", "layer"]
    assert rep.units[0].iters == 0 and rep.units[1].iters == FAST["iters"]
    assert rep.units[2].layers == ("features.2.conv.0.0", "features.2.conv.1.0",
                                   "features.2.conv.2")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())  # folded
    assert hasattr(q.features[2], "input_quantizer")
    assert hasattr(q.features[2].conv[1][0], "input_quantizer")
    assert hasattr(q.features[2].conv[2], "input_quantizer")
    assert rep.units[1].act_bits == 8 and rep.units[2].act_bits == 6  # after the first layer
    for n, w in _weights(q).items():
        assert w.unique().numel() <= 2 ** rep.bits[n], n
    with torch.no_grad():
        out = q(x)
    assert out.shape == (32, 10) and torch.isfinite(out).all()


def test_register_block_makes_a_custom_module_one_unit():
    from mixquant_lite import layers

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))) + x

    net = nn.Sequential(nn.Conv2d(1, 4, 3), Pair(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    assert [u.kind for u in find_units(net)] == ["layer", "layer", "layer", "layer"]
    try:
        layers.register_block(Pair, ("b",))
        assert [u.kind for u in find_units(net)] == ["layer", "block", "layer"]
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(9))
        q, rep = brecq(net, x, 4, act_bits=8, iters=3, n_calib=16, batch_size=8,
                       fold_batchnorm=False, progress=False)
        assert rep.units[1].kind == "block" and hasattr(q[1].b, "input_quantizer")
    finally:
        del layers._BLOCKS[Pair]
    with pytest.raises(TypeError, match="block_type"):
        layers.register_block(object)


@pytest.mark.slow
def test_brecq_deterministic_on_cpu(r20, calib):
    runs = [brecq(r20, calib, 3, seed=s, **FAST) for s in (0, 0, 1)]
    w0, w1, w2 = (_weights(q) for q, _ in runs)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [u.loss_after for u in runs[0][1].units] == [u.loss_after for u in runs[1][1].units]
    assert any(not torch.equal(w0[k], w2[k]) for k in w0)


@pytest.mark.slow
def test_brecq_accepts_a_loader(r20, calib):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(calib, torch.zeros(len(calib))), batch_size=10)
    _, rep = brecq(r20, loader, 4, **FAST)
    assert rep.settings["n_calib"] == 32


def test_brecq_bad_inputs(r20, calib):
    names = quantizable_layer_names(r20)
    with pytest.raises(ValueError, match="lacks"):
        brecq(r20, calib, {**dict.fromkeys(names, 4), "layer9.0.conv1": 4}, **FAST)
    with pytest.raises(ValueError, match="no bit-width"):
        brecq(r20, calib, {n: 4 for n in names[:-1]}, **FAST)
    for bad in (0, 17, -1):
        with pytest.raises(ValueError):
            brecq(r20, calib, bad, **FAST)
    with pytest.raises(ValueError):
        brecq(r20, calib, {**dict.fromkeys(names, 4), "fc": 0}, **FAST)
    with pytest.raises(TypeError):
        brecq(r20, calib, "4", **FAST)
    with pytest.raises(TypeError):
        brecq(r20, calib, 4.0, **FAST)
    with pytest.raises(ValueError):
        brecq(r20, calib, 4, act_bits=0, **FAST)
    with pytest.raises(ValueError, match="too little calibration data"):
        brecq(r20, calib[:16], 4, **FAST)
    with pytest.raises(ValueError, match="too little calibration data"):
        brecq(r20, calib[:100], 4, progress=False)  # the recipe's 1,024 by default
    with pytest.raises(ValueError, match="batch_size"):
        brecq(r20, calib, 4, iters=1, n_calib=8, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        brecq(nn.Sequential(nn.ReLU(), nn.Flatten()), calib, 4, **FAST)
    with pytest.raises(TypeError):
        brecq(r20, [1, 2, 3], 4, **FAST)
    with pytest.raises(ValueError, match="iters"):
        brecq(r20, calib, 4, iters=-1, n_calib=32, progress=False)


def test_brecq_refuses_wrong_folding():
    """BN applied before its conv by name: folding would change the output, so it is refused."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 1)
            self.bn1 = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv1(self.bn1(x)).mean((2, 3)))

    net = _randomize_bn(Odd())
    x = torch.randn(32, 4, 6, 6)
    with pytest.raises(ValueError, match="folding changed"):
        brecq(net, x, 4, **FAST)
    q, _ = brecq(net, x, 4, fold_batchnorm=False, **FAST)
    assert isinstance(q.bn1, nn.BatchNorm2d)


@pytest.mark.slow
def test_brecq_with_a_real_bitplan(r20, calib):
    from mixquant_lite import search
    from mixquant_lite.table import qe_table

    table = qe_table(fold_bn(r20))  # QE of the folded weights BRECQ quantizes
    plan = search.mixquant(table, 50.0)
    _, rep = brecq(r20, calib, plan, first_last_bits=None, **FAST)
    assert rep.bits == dict(plan.bits)


# --------------------------------------------------------------------------- accuracy (slow)


@pytest.mark.slow
def test_brecq_beats_vanilla_at_3_and_2_bits():
    """Offline default: BRECQ (256 calibration images, 200 iterations per unit) beats vanilla
    asymmetric round-to-nearest at the same bit-widths (first/last 8 bits for both)."""
    from mixquant_lite.evaluation import evaluate
    from mixquant_lite.zoo.data import calibration_batch, mnist5k_loader
    from mixquant_lite.zoo.models import data_dir, load_pretrained

    if not (data_dir() / "resnet20-mnist5k.pt").is_file():
        pytest.skip("trained checkpoint data/resnet20-mnist5k.pt not present")
    model = load_pretrained("resnet20-mnist5k")
    loader = mnist5k_loader("test")
    x = calibration_batch(256, seed=0)
    for bits, margin in ((3, 0.10), (2, 0.30)):
        vanilla = copy.deepcopy(model)
        with torch.no_grad():
            for n, m in vanilla.named_modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(fake_quantize(m.weight, 8 if n in ("conv1", "fc") else bits))
        acc_vanilla = evaluate(vanilla, loader)
        qmodel, _ = brecq(model, x, bits, iters=200, n_calib=256, progress=False)
        acc_brecq = evaluate(qmodel, loader)
        assert acc_brecq >= acc_vanilla + margin, (bits, acc_brecq, acc_vanilla)
