"""GPTQ: the Hessian, the Cholesky/lazy-batch column loop against the paper's plain OBS-update
form, exact codes and grids, the sequential model driver, plans and config validation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixquant_lite.gptq import GPTQConfig, gptq, gptq_layer, output_error
from mixquant_lite.gptq_core import GridSpec, HessianAccumulator, gptq_weight
from mixquant_lite.plan import BitPlan
from mixquant_lite.qspec import QuantSpec
from mixquant_lite.quant import choose_qparams

pytestmark = pytest.mark.usefixtures("one_thread")


def correlated(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5 + torch.eye(k)
    return torch.randn(n, k, generator=g) @ mix


def obs_reference(w, h, bits, percdamp=0.01):
    """The paper's column loop without Cholesky or blocks, in float64: quantize column j, spread
    its error with row j of H^-1, then remove j from H^-1 (the OBS update)."""
    w = w.double().clone()
    h = h.double().clone()
    h += percdamp * torch.diag(h).mean() * torch.eye(len(h), dtype=h.dtype)
    hinv = torch.linalg.inv(h)
    s, z = choose_qparams(w.float(), bits, "per_channel")
    s, z = s.double(), z.double()
    codes = torch.zeros_like(w, dtype=torch.int64)
    for j in range(w.shape[1]):
        q = torch.clamp(torch.round(w[:, j] / s) + z, 0, 2**bits - 1)
        codes[:, j] = q.long()
        err = (w[:, j] - (q - z) * s) / hinv[j, j]
        w[:, j:] -= err[:, None] * hinv[j, j:][None, :]
        hinv = hinv - hinv[:, j:j + 1] @ hinv[j:j + 1, :] / hinv[j, j]
    return codes, s, z


@pytest.mark.parametrize("block_size", [1, 16, 128])
def test_cholesky_lazy_batch_loop_equals_the_obs_update_form(block_size):
    x = correlated(512, 48)
    w = torch.randn(24, 48)
    h = 2 * x.T.double() @ x.double() / len(x)
    codes, s, z = gptq_weight(w, h, GridSpec(3, "per_channel"), block_size=block_size)
    ref, _, _ = obs_reference(w, h, 3)
    assert (codes == ref).float().mean() >= 0.99  # float32 loop vs float64: rare tie flips
    err = output_error(w, (codes - z) * s, h)
    err_ref = output_error(w, (ref - z) * s, h)
    assert err == pytest.approx(err_ref, rel=2e-2)


def test_hessian_of_linear_and_grouped_conv():
    lin = nn.Linear(6, 3)
    acc = HessianAccumulator(lin)
    xs = [torch.randn(2, 5, 6), torch.randn(7, 6)]
    for x in xs:
        acc.add(x)
    flat = torch.cat([x.reshape(-1, 6) for x in xs]).double()
    torch.testing.assert_close(acc.hessian()[0], 2 * flat.T @ flat / 17, rtol=1e-6, atol=1e-6)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    acc = HessianAccumulator(conv)
    x = torch.randn(3, 4, 7, 7)
    acc.add(x)
    cols = F.unfold(x, 3, padding=1, stride=2)  # (3, 36, L)
    for gi in range(2):
        v = cols[:, gi * 18:(gi + 1) * 18].permute(0, 2, 1).reshape(-1, 18).double()
        torch.testing.assert_close(acc.hessian()[gi], 2 * v.T @ v / len(v), rtol=1e-6, atol=1e-6)
    # the mean output error from H equals the directly measured one
    dw = torch.randn_like(conv.weight) * 0.01
    direct = (F.conv2d(x, dw, stride=2, padding=1, groups=2).double() ** 2).sum() / acc.n
    assert output_error(conv.weight + dw, conv.weight, acc.hessian()) == pytest.approx(
        direct.item(), rel=1e-6)


@pytest.mark.parametrize("cfg", [
    GPTQConfig(),
    GPTQConfig(act_order=True),
    GPTQConfig(granularity="per_group", group_size=32),
    GPTQConfig(granularity="per_group", group_size=32, act_order=True),
    GPTQConfig(granularity="per_tensor", block_size=16),
    GPTQConfig(granularity="per_group", group_size=32, static_groups=True),
    GPTQConfig(range_method="mse", percdamp=0.1),
])
def test_codes_and_grids_are_the_model_and_beat_round_to_nearest(cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64))
    x = correlated(256, 64)
    before = [p.detach().clone() for p in model.parameters()]
    q, rep = gptq(model, [x[:128], (x[128:], None)], 3, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert [r.name for r in rep.layers] == ["0", "2"] and rep.not_quantized == []
    for r in rep.layers:
        qw = rep.weights[r.name]
        assert torch.equal(q.get_submodule(r.name).weight, qw.dequantize())
        assert qw.codes.dtype == torch.uint8 and int(qw.codes.max()) <= 7
        assert r.n_vectors == 256 and r.error < r.rtn_error
    shape = {"per_tensor": (), "per_channel": (96,), "per_group": (96, 2)}[cfg.granularity]
    assert tuple(rep.weights["0"].scale.shape) == shape


def test_later_layers_see_the_quantized_earlier_layers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    x = correlated(200, 32)
    q, rep = gptq(model, x, 2)
    acc = HessianAccumulator(q[2])
    with torch.no_grad():
        acc.add(q[1](q[0](x)))
    expect = gptq_layer(model[2], acc.hessian(), 2)
    assert torch.equal(rep.weights["2"].codes, expect.codes)


def test_plan_dead_columns_grouped_conv_and_unreached_layers():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 8, 3, groups=2, padding=1)
            self.b = nn.Linear(8, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            y = self.a(x).mean((2, 3))
            y = y * torch.tensor([1.0] * 7 + [0.0])  # input feature 7 of b is always 0: dead
            return self.b(y)

    m = M()
    x = torch.randn(16, 4, 6, 6)
    q, rep = gptq(m, x, {"a": 4, "b": 3, "unused": 5})
    by = {r.name: r for r in rep.layers}
    assert by["unused"].reached is False and by["unused"].n_vectors == 0
    assert torch.all(rep.weights["b"].dequantize()[:, 7] == 0)  # dead column -> 0
    q2, rep2 = gptq(m, x, {"b": 3})
    assert rep2.not_quantized == ["a", "unused"] and torch.equal(q2.a.weight, m.a.weight)
    with pytest.raises(ValueError, match="lacks"):
        gptq(m, x, {"nope": 3})


def test_config_validation_and_group_size_errors():
    for bad, match in [
        (dict(block_size=0), "block_size"), (dict(percdamp=-0.1), "percdamp"),
        (dict(granularity="per_row"), "granularity"), (dict(group_size=32), "group_size"),
        (dict(granularity="per_group"), "group_size"),
        (dict(granularity="per_group", group_size=48), r"\(32, 64, 128\)"),
        (dict(granularity="per_group", group_size=128, block_size=64), "multiple"),
        (dict(granularity="per_group", group_size=32, act_order=True, static_groups=False),
         "static_groups"),
        (dict(range_method="max"), "range_method"),
    ]:
        with pytest.raises(ValueError, match=match):
            GPTQConfig(**bad)
    m = nn.Sequential(nn.Linear(48, 4), nn.Linear(4, 64), nn.Linear(64, 2))
    # K = 48 and K = 4 fit no group of 32: those layers are quantized per channel (fallback)
    q, rep = gptq(m, torch.randn(8, 48), 4, GPTQConfig(granularity="per_group", group_size=32))
    assert rep.fallback == ["0", "1"]
    assert rep.weights["0"].scale.shape == (4,) and rep.weights["2"].scale.shape == (2, 2)
    assert rep.storage["grid_bits"] == (4 + 64 + 2 * 2) * (32 + 4)
    with pytest.raises(TypeError, match="config"):
        gptq(m, torch.randn(8, 48), 4, {"block_size": 4})


def test_a_bitplan_drives_bits_and_grid():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    spec = QuantSpec("per_group", group_size=32)
    plan = BitPlan({"0": 3, "2": 4}, {"0": 64 * 32, "2": 32 * 8}, spec).with_shapes(m)
    q, rep = gptq(m, correlated(64, 64), plan)
    assert rep.config.spec == spec and rep.weights["0"].scale.shape == (32, 2)
    assert rep.avg_bits == pytest.approx(plan.bits_per_weight)
    with pytest.raises(ValueError, match="spec"):
        gptq(m, correlated(64, 64), plan, GPTQConfig())


def test_a_tiny_gpt_like_model_fed_dicts_with_per_group_grids():
    class TinyGPT(nn.Module):
        def __init__(self, vocab=50, d=64):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.blocks = nn.ModuleList(
                nn.ModuleDict({"qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(d, d),
                               "fc1": nn.Linear(d, 4 * d), "fc2": nn.Linear(4 * d, d)})
                for _ in range(2))
            self.head = nn.Linear(d, vocab, bias=False)

        def forward(self, input_ids, attention_mask=None):
            h = self.emb(input_ids)
            for b in self.blocks:
                q, k, v = b["qkv"](h).chunk(3, -1)
                att = torch.softmax(q @ k.transpose(1, 2) / 8, -1)
                h = h + b["proj"](att @ v)
                h = h + b["fc2"](F.gelu(b["fc1"](h)))
            return self.head(h)

    torch.manual_seed(0)
    m = TinyGPT()
    batches = [{"input_ids": torch.randint(0, 50, (4, 16))} for _ in range(3)]
    cfg = GPTQConfig(granularity="per_group", group_size=32, act_order=True)
    q, rep = gptq(m, batches, 4, cfg)
    assert len(rep.layers) == 9 and all(r.n_vectors == 3 * 4 * 16 for r in rep.layers)
    assert rep.avg_bits == pytest.approx(4 + 36 / 32)  # float32 step + 4-bit zero per group
    assert sum(r.error for r in rep.layers) < sum(r.rtn_error for r in rep.layers)
    with torch.no_grad():
        ref = m(**batches[0])
        out = q(**batches[0])
    assert out.shape == ref.shape and torch.isfinite(out).all()
