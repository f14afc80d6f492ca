"""Per-group grids: choose_qparams / quantize / dequantize / fake-quantize / QE and the QE table
exact against a naive loop over groups, the storage accounting, and the errors."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from mixquant_lite import table as qt
from mixquant_lite.groups import (
    GROUP_SIZES,
    bits_per_weight,
    check_group_size,
    n_grids,
    plan_storage,
    storage_bits,
)
from mixquant_lite.quant import (
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    fake_quantize_affine,
    qe,
    quantize_affine,
)
from mixquant_lite.table import qe_table

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.usefixtures("one_thread")


@st.composite
def grouped_weights(draw):
    """A weight ``(C_out, ...)`` whose input dimension is a multiple of a drawn group size,
    Linear-like (2-D) or Conv-like (4-D), random / on a coarse grid (ties) / constant rows."""
    g = draw(st.sampled_from(GROUP_SIZES))
    c_out = draw(st.integers(1, 4))
    n_groups = draw(st.integers(1, 3))
    conv = draw(st.booleans())
    k = g * n_groups
    if conv:  # in_channels * kh * kw = k with a 2x2 or 1x1 kernel
        kh = draw(st.sampled_from([1, 2]))
        shape = (c_out, k // (kh * kh), kh, kh)
    else:
        shape = (c_out, k)
    kind = draw(st.sampled_from(["random", "grid", "constant"]))
    n = int(np.prod(shape))
    if kind == "random":
        vals = draw(hnp.arrays(np.float32, n, elements=st.floats(-1, 1, width=32)))
    elif kind == "grid":
        vals = draw(hnp.arrays(np.float32, n, elements=st.integers(-8, 8))) / 8.0
    else:
        vals = np.full(n, draw(st.floats(-1, 1, width=32)), dtype=np.float32)
    mag = draw(st.sampled_from([1e-6, 1.0, 1e4]))
    w = torch.from_numpy((vals * mag).astype(np.float32)).reshape(shape)
    return w, g


def naive_group_round_trip(w: torch.Tensor, bits: int, g: int):
    """Each group of each row quantized on its own by the per-tensor quantizer in a Python
    loop: codes, dequantized weights, steps and zero points."""
    rows = w.reshape(w.shape[0], -1)
    q = torch.empty_like(rows, dtype=torch.int64)
    out = torch.empty_like(rows)
    n_g = rows.shape[1] // g
    scales = torch.empty(rows.shape[0], n_g)
    zps = torch.empty(rows.shape[0], n_g, dtype=torch.int32)
    for c in range(rows.shape[0]):
        for j in range(n_g):
            piece = rows[c, j * g:(j + 1) * g]
            s, z = choose_qparams(piece, bits, "per_tensor")
            q[c, j * g:(j + 1) * g] = quantize_affine(piece, s, z, bits).long()
            out[c, j * g:(j + 1) * g] = fake_quantize_affine(piece, s, z, bits)
            scales[c, j], zps[c, j] = s, z
    return q.reshape(w.shape), out.reshape(w.shape), scales, zps


@pytest.mark.slow
@SETTINGS
@given(wg=grouped_weights(), bits=st.integers(1, 8))
def test_per_group_is_exact_against_a_loop_over_groups(wg, bits):
    w, g = wg
    scale, zp = choose_qparams(w, bits, "per_group", group_size=g)
    q_ref, out_ref, s_ref, z_ref = naive_group_round_trip(w, bits, g)
    assert scale.shape == (w.shape[0], w[0].numel() // g) == zp.shape
    assert torch.equal(scale, s_ref) and torch.equal(zp, z_ref)
    q = quantize_affine(w, scale, zp, bits)
    assert q.shape == w.shape and torch.equal(q.long(), q_ref)
    fq = fake_quantize_affine(w, scale, zp, bits)
    assert torch.equal(fq, out_ref)
    assert torch.equal(dequantize_affine(q, scale, zp), out_ref)
    assert torch.equal(fake_quantize(w, bits, group_size=g), out_ref)
    d = (w - out_ref).double()
    assert qe(w, bits, group_size=g) == pytest.approx((d * d).mean().item(), rel=1e-12, abs=0)


@pytest.mark.slow
@SETTINGS
@given(wg=grouped_weights(), bits=st.lists(st.integers(1, 8), min_size=1, max_size=3,
                                           unique=True))
def test_qe_table_per_group_matches_the_loop(wg, bits):
    w, g = wg
    bits = tuple(sorted(bits))
    model = nn.Linear(w[0].numel(), w.shape[0], bias=False)
    with torch.no_grad():
        model.weight.copy_(w.reshape(w.shape[0], -1))
    t = qe_table(model, bits, group_size=g)
    ref = []
    for b in bits:
        d = (w - naive_group_round_trip(w, b, g)[1]).double()
        ref.append((d * d).mean().item())
    assert t.group_size == g
    np.testing.assert_allclose(t.values[0], ref, rtol=2e-6, atol=0)


def test_qe_table_per_group_on_a_conv_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 4), nn.Flatten(), nn.Linear(256, 10))
    t = qe_table(model, [3, 4], group_size=64)
    ref = [[qe(m.weight, b, group_size=64) for b in (3, 4)] for m in (model[0], model[2])]
    np.testing.assert_allclose(t.values, ref, rtol=1e-6)
    assert "group_size=64" in repr(t)
    pc = qe_table(model, [3, 4], per_channel=True)
    assert (t.values < pc.values).all()  # finer grids, smaller error (random weights)
    import pickle

    assert pickle.loads(pickle.dumps(t)).group_size == 64


def test_errors_name_group_size_and_the_accepted_values():
    w = torch.randn(4, 96)
    with pytest.raises(ValueError, match=r"group_size must be one of \(32, 64, 128\)"):
        choose_qparams(w, 4, "per_group", group_size=48)
    with pytest.raises(ValueError, match=r"group_size=64 does not divide .* 96.*\[32\]"):
        choose_qparams(w, 4, "per_group", group_size=64)
    with pytest.raises(ValueError, match="group_size"):
        choose_qparams(w, 4, "per_group")
    with pytest.raises(ValueError, match="group_size"):
        choose_qparams(w, 4, "per_channel", group_size=32)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        choose_qparams(torch.randn(64), 4, "per_group", group_size=32)
    with pytest.raises(ValueError, match="group_size=32 does not divide .* 27"):
        qe_table(nn.Conv2d(3, 8, 3), [4], group_size=32)
    with pytest.raises(ValueError, match="group_size"):
        check_group_size(True)
    s, z = choose_qparams(w, 4, "per_group", group_size=32)
    with pytest.raises(ValueError, match="does not fit"):
        quantize_affine(torch.randn(5, 96), s, z, 4)


def test_mse_range_per_group_is_the_loop_of_per_tensor_mse():
    torch.manual_seed(1)
    w = torch.randn(3, 64)
    s, z = choose_qparams(w, 3, "per_group", "mse", group_size=32)
    for c in range(3):
        for j in range(2):
            sr, zr = choose_qparams(w[c, 32 * j:32 * (j + 1)], 3, "per_tensor", "mse")
            assert s[c, j] == sr and z[c, j] == zr


def test_storage_accounting():
    # 4-bit g128 on a 384 x 1536 Linear: 4 + (32 + 4) / 128 bits per weight (float32 steps, as
    # export writes them); float16 steps on request
    assert bits_per_weight((384, 1536), 4, "per_group", 128) == pytest.approx(4 + 36 / 128)
    assert bits_per_weight((384, 1536), 4, "per_channel") == pytest.approx(4 + 36 / 1536)
    assert bits_per_weight((384, 1536), 4) == pytest.approx(4 + 36 / (384 * 1536))
    assert bits_per_weight((384, 1536), 4, "per_group", 128, scale_bits=16) == pytest.approx(
        4 + 20 / 128)
    # a conv: 16 x (8 * 3 * 3) = 16 x 72, per channel: 16 grids
    assert n_grids((16, 8, 3, 3), "per_channel") == 16
    assert storage_bits((16, 8, 4, 4), 3, "per_group", 64, 16) == 16 * 128 * 3 + 16 * 2 * 19
    rep = plan_storage({"a": (8, 128), "b": (4, 64)}, {"a": 4, "b": 2}, "per_group", 32,
                       scale_bits=16)
    assert rep["code_bits"] == 8 * 128 * 4 + 4 * 64 * 2
    assert rep["grid_bits"] == 8 * 4 * 20 + 4 * 2 * 18
    assert rep["avg_bits"] == pytest.approx(rep["total_bits"] / (8 * 128 + 4 * 64))
    with pytest.raises(ValueError, match="granularity"):
        n_grids((4, 4), "per_row")


def test_table_hook_keeps_per_channel_numbers():
    """The hook only reshapes: per group with g = K equals per channel."""
    model = nn.Linear(128, 6)
    a = qe_table(model, [2, 4], group_size=128)
    b = qe_table(model, [2, 4], per_channel=True)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-12)
    assert qt.QETable is type(a)
