"""The fused (numba) QE-table kernel: the same numbers as qe() and as the eager torch path, no
process-wide side effects; and the eager path, which the kernel now shadows on CPU, still
checked here with the kernel disabled (``MIXQUANT_NO_NUMBA=1``)."""
import numpy as np
import pytest
import test_qe_table as tq  # the eager checks, rerun below with the kernel off
import torch
from torch import nn

from mixquant_lite import _qe_kernels as K
from mixquant_lite.layers import quantizable_layers
from mixquant_lite.quant import qe
from mixquant_lite.table import qe_table
from mixquant_lite.zoo.models import resnet20

pytestmark = pytest.mark.usefixtures("one_thread")
needs_numba = pytest.mark.skipif(not K.HAVE_NUMBA, reason="numba not installed")


@pytest.fixture(scope="module")
def r20():
    torch.manual_seed(0)
    return resnet20().eval()


@pytest.fixture
def eager(monkeypatch):
    monkeypatch.setenv("MIXQUANT_NO_NUMBA", "1")
    assert not K.available()


def test_disabled_or_off_cpu_means_none(monkeypatch):
    w = [("a", torch.randn(4, 3))]
    monkeypatch.setenv("MIXQUANT_NO_NUMBA", "1")
    assert K.table_sse(w, (2, 4), False) is None
    monkeypatch.delenv("MIXQUANT_NO_NUMBA")
    assert K.table_sse([("a", torch.empty(4, 3, device="meta"))], (2, 4), False) is None


@needs_numba
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_matches_eager_and_qe(r20, monkeypatch, per_channel):
    assert K.available()
    fused = qe_table(r20, bits=range(1, 17), per_channel=per_channel).values
    monkeypatch.setenv("MIXQUANT_NO_NUMBA", "1")
    eager = qe_table(r20, bits=range(1, 17), per_channel=per_channel).values
    np.testing.assert_allclose(fused, eager, rtol=1e-6)
    np.testing.assert_allclose(fused, tq.reference(r20, range(1, 17), per_channel), rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_edge_cases(per_channel):
    """Rows shorter and longer than a block, clamped grids, float32 squares that underflow
    (the float64 re-sum), half-precision weights, a constant layer."""
    torch.manual_seed(2)
    named = [
        ("long", torch.randn(3, 2 * K.BLOCK + 5)),  # several blocks per row, ragged tail
        ("clamp", torch.tensor([[-1.0, 1.0, 0.3]])),  # round(1 * 1.5) = 2 > qmax - z at 2 bits
        ("tiny", torch.tensor([[1.0, 0.0, 0.0, 1e-30]])),
        ("half", torch.randn(5, 7).to(torch.bfloat16)),
        ("const", torch.full((2, 2), 0.25)),
    ]
    bits = (1, 2, 3, 8, 16)
    sse = K.table_sse(named, bits, per_channel, n_threads=1)
    for (name, w), s in zip(named, sse, strict=True):
        ref = [qe(w, b, per_channel=per_channel) for b in bits]
        np.testing.assert_allclose(s / w.numel(), ref, rtol=1e-6, atol=0, err_msg=name)


@needs_numba
def test_threads_same_numbers_no_global_state(r20):
    named = [(n, m.weight) for n, m in quantizable_layers(r20)]
    before = torch.get_num_threads()
    one = K.table_sse(named, (2, 4, 8), True, n_threads=1)
    two = K.table_sse(named, (2, 4, 8), True, n_threads=2)
    assert torch.get_num_threads() == before
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    bad = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        bad[2].weight[0, 0] = float("inf")
        bad[1].weight[1, 1] = float("nan")
    with pytest.raises(ValueError, match="layer '1'.*NaN"):  # the first bad layer, in order
        K.table_sse([(n, m.weight) for n, m in quantizable_layers(bad)], (4,), False, 2)


# ---- the eager torch path (the fallback without numba), with the kernel switched off


@pytest.mark.parametrize("per_channel", [False, True])
def test_eager_table_matches_qe(r20, eager, per_channel):
    tq.test_table_matches_qe(r20, per_channel)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("chunk", [7, 1000])
def test_eager_chunking(monkeypatch, eager, per_channel, chunk):
    tq.test_chunking_does_not_change_the_numbers(monkeypatch, per_channel, chunk)


@pytest.mark.slow
def test_eager_any_tensor_matches_qe(eager):
    tq.test_any_tensor_matches_qe()


def test_eager_half_precision_threads_validation(r20, eager):
    tq.test_half_precision_models(r20)
    tq.test_layers_in_a_thread_pool(r20)
    tq.test_validation(r20)
