"""The quantizer of docs/method.md: exact agreement with PyTorch's fused kernels and
with an independent float32/float64 re-implementation of the spec, and input validation."""
import math

import numpy as np
import pytest
import torch
from conftest import weights
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mixquant_lite.quant import (
    check_bit_list,
    check_bits,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    fake_quantize_affine,
    qe,
    quantize_affine,
)


def qparams_pc(w, bits, *, per_channel=False, range_method="minmax"):
    return choose_qparams(w, bits, "per_channel" if per_channel else "per_tensor", range_method)


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("one_thread")

def spec_round_trip(w: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """The spec's quantizer written independently in numpy, with the fused kernels' float32
    arithmetic (x * (1/s) in float32, round half to even, (q - z) * s in float32)."""
    x = w.astype(np.float32)
    flat = x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)
    qmax = 2**bits - 1
    lo = np.minimum(flat.min(1).astype(np.float64), 0.0)
    hi = np.maximum(flat.max(1).astype(np.float64), 0.0)
    s = np.maximum((hi - lo) / qmax, 2.0**-100).astype(np.float32)
    z = np.clip(np.rint(-lo / s.astype(np.float64)), 0, qmax)
    inv = (np.float32(1) / s)[:, None]
    q = np.clip(np.rint(flat * inv) + z[:, None], 0, qmax)
    return ((q - z[:, None]).astype(np.float32) * s[:, None]).reshape(x.shape)




# --------------------------------------------------------------------------- exactness


@pytest.mark.slow
@SETTINGS
@given(w=weights(), bits=st.integers(1, 16), per_channel=st.booleans())
def test_quantize_matches_fused_kernels_and_the_spec(w, bits, per_channel):
    try:
        out = fake_quantize(w, bits, per_channel=per_channel)
    except ValueError as e:  # only a float32 step that overflows may be refused
        assert "too large" in str(e)
        assume(False)
    assert out.shape == w.shape and out.dtype == w.dtype and out.device == w.device
    scale, zp = qparams_pc(w, bits, per_channel=per_channel)
    x = w.float()
    if per_channel:
        ref = torch.fake_quantize_per_channel_affine(x, scale, zp, 0, 0, 2**bits - 1)
    else:
        ref = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp), 0, 2**bits - 1)
    assert torch.equal(out, ref.to(w.dtype))
    spec = torch.from_numpy(spec_round_trip(x.numpy(), bits, per_channel)).to(w.dtype)
    assert torch.equal(out, spec)


@pytest.mark.slow
@SETTINGS
@given(w=weights(), bits=st.integers(1, 16), per_channel=st.booleans(),
       range_method=st.sampled_from(["minmax", "mse"]))
def test_integer_codes_and_straight_through_path_equal_the_fused_kernel(
    w, bits, per_channel, range_method
):
    """quantize_affine -> dequantize_affine, and the differentiable (learned-step) path, give the
    fused kernel's values bit for bit, for both range methods."""
    try:
        scale, zp = qparams_pc(w, bits, per_channel=per_channel, range_method=range_method)
    except ValueError as e:
        assert "too large" in str(e)
        assume(False)
    x = w.float()
    fused = fake_quantize_affine(x, scale, zp, bits)
    q = quantize_affine(x, scale, zp, bits)
    assert q.dtype == (torch.uint8 if bits <= 8 else torch.int32)
    assert int(q.min()) >= 0 and int(q.max()) <= 2**bits - 1
    assert torch.equal(dequantize_affine(q, scale, zp), fused)
    s = scale.clone().requires_grad_(True)
    ste = fake_quantize_affine(x, s, zp, bits)
    assert torch.equal(ste.detach(), fused)


def test_mse_range_is_not_worse_than_minmax_in_its_own_norm():
    g = torch.Generator().manual_seed(0)
    for shape, gran in (((4096,), "per_tensor"), ((8, 3, 3, 3), "per_channel")):
        w = torch.randn(*shape, generator=g) ** 3  # heavy tails: clipping pays off
        for bits in (2, 3, 4):
            errs = {}
            for method in ("minmax", "mse"):
                s, z = choose_qparams(w, bits, gran, method)
                errs[method] = (w - fake_quantize_affine(w, s, z, bits)).abs().pow(2.4).sum()
            assert errs["mse"] <= errs["minmax"] + 1e-6
        s_mm, _ = choose_qparams(w, 2, gran, "minmax")
        s_mse, _ = choose_qparams(w, 2, gran, "mse")
        assert (s_mse <= s_mm).all() and (s_mse < s_mm).any()


def test_fused_path_on_real_weights_against_the_spec():
    from mixquant_lite.zoo.models import load_pretrained

    model = load_pretrained("resnet20-mnist5k")
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        w = m.weight.detach()
        for bits in (2, 4, 8):
            for pc in (False, True):
                spec = torch.from_numpy(spec_round_trip(w.numpy(), bits, pc))
                assert torch.equal(fake_quantize(w, bits, per_channel=pc), spec), name


def test_removed_v01_names_are_gone():
    import mixquant_lite
    import mixquant_lite.quant as quant

    for name in ("quantize", "qparams"):
        assert not hasattr(quant, name) and not hasattr(mixquant_lite, name)


def test_qparams_must_fit_the_tensor():
    w = torch.randn(4, 3)
    s, z = choose_qparams(w, 4, "per_channel")
    with pytest.raises(ValueError, match="per-channel scale of 4"):
        fake_quantize_affine(torch.randn(5, 3), s, z, 4)
    with pytest.raises(ValueError, match="shape"):
        fake_quantize_affine(w, s, z[:2], 4)


@SETTINGS
@given(w=weights(), bits=st.integers(1, 16), per_channel=st.booleans())
def test_qe_matches_a_float64_reference(w, bits, per_channel):
    # fp16/bf16 weights are measured in float32: W upcast, W_hat as the float32 kernel gives it
    try:
        w_hat = fake_quantize(w.float(), bits, per_channel=per_channel)
    except ValueError:
        assume(False)
    x = w.float().double().numpy()
    ref = float(np.mean((x - w_hat.double().numpy()) ** 2))
    got = qe(w, bits, per_channel=per_channel)
    assert isinstance(got, float) and math.isfinite(got)
    assert got == pytest.approx(ref, rel=1e-6, abs=0.0)


def test_qparams_shapes_and_dtypes():
    w = torch.randn(6, 3, 3, 3)
    s, z = qparams_pc(w, 4)
    assert s.shape == () and s.dtype == torch.float32 and z.dtype == torch.int32
    s, z = qparams_pc(w, 4, per_channel=True)
    assert s.shape == (6,) and z.shape == (6,) and z.dtype == torch.int32
    assert ((z >= 0) & (z <= 15)).all()


def test_zero_and_constant_tensors():
    z = torch.zeros(4, 5)
    assert torch.equal(fake_quantize(z, 3), z) and qe(z, 3) == 0.0
    assert qe(z, 3, per_channel=True) == 0.0
    c = torch.full((10,), 0.7)
    # range [0, 0.7]: the top level is 0.7 up to the float32 rounding of the step
    assert qe(c, 4) <= (0.7 * 2**-23) ** 2
    assert torch.isfinite(fake_quantize(c, 1)).all()


def test_large_magnitudes_use_float64_range_arithmetic():
    w = torch.tensor([-3e38, 0.0, 3e38])
    assert torch.isfinite(fake_quantize(w, 8)).all()  # hi - lo overflows float32, not float64
    with pytest.raises(ValueError, match="too large"):
        fake_quantize(w, 1)  # a 6e38 step is not a float32


def test_half_precision_is_measured_in_float32():
    w = torch.randn(64, 32)
    for dt in (torch.float16, torch.bfloat16):
        wh = w.to(dt)
        assert qe(wh, 4) == pytest.approx(qe(wh.float(), 4), rel=1e-12)
        assert torch.equal(fake_quantize(wh, 4), fake_quantize(wh.float(), 4).to(dt))


def test_roundoff_error_is_about_s2_over_12():
    # docs/method.md, "QE": uniform rounding error when the step is small next to the spread
    w = torch.rand(200_000) * 2 - 1
    s, _ = qparams_pc(w, 8)
    assert qe(w, 8) == pytest.approx(s.item() ** 2 / 12, rel=0.02)
    assert qe(w, 4) / qe(w, 8) == pytest.approx((255 / 15) ** 2, rel=0.05)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [0, 17, -3])
def test_bits_out_of_range(bad):
    with pytest.raises(ValueError, match="bits"):
        fake_quantize(torch.randn(3), bad)
    with pytest.raises(ValueError, match="bits"):
        qe(torch.randn(3), bad)


@pytest.mark.parametrize("bad", [4.0, "4", True, None])
def test_bits_not_an_int(bad):
    with pytest.raises(TypeError, match="bits"):
        check_bits(bad)


def test_numpy_int_bits_are_fine():
    assert check_bits(np.int64(5)) == 5


def test_bit_lists():
    assert check_bit_list(range(2, 9)) == (2, 3, 4, 5, 6, 7, 8)
    assert check_bit_list([8, 2, 4]) == (2, 4, 8)
    with pytest.raises(ValueError, match="empty"):
        check_bit_list([])
    with pytest.raises(ValueError, match="duplicated"):
        check_bit_list([2, 4, 4])
    with pytest.raises(TypeError):
        check_bit_list(8)
    with pytest.raises(ValueError):
        check_bit_list([2, 20])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights(bad):
    w = torch.randn(10)
    w[3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        fake_quantize(w, 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        qe(w, 4, per_channel=True)


def test_bad_tensors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        fake_quantize([1.0, 2.0], 4)
    with pytest.raises(TypeError, match="floating-point"):
        fake_quantize(torch.arange(5), 4)
    with pytest.raises(ValueError, match="empty"):
        fake_quantize(torch.empty(0), 4)
    with pytest.raises(ValueError, match="per_channel"):
        fake_quantize(torch.tensor(1.0), 4, per_channel=True)
    with pytest.raises(ValueError, match="range_method"):
        fake_quantize(torch.randn(3), 4, range_method="percentile")
    with pytest.raises(ValueError, match="granularity"):
        choose_qparams(torch.randn(3), 4, "per_row")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    w = torch.randn(32, 16, 3, 3)
    for pc in (False, True):
        a = fake_quantize(w, 3, per_channel=pc)
        b = fake_quantize(w.cuda(), 3, per_channel=pc)
        assert b.is_cuda and torch.equal(a, b.cpu())
        assert qe(w.cuda(), 3, per_channel=pc) == pytest.approx(qe(w, 3, per_channel=pc),
                                                                rel=1e-9)
