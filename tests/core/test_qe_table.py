"""The QE table: same numbers as qe() for every layer and bit-width, whichever internal path
(chunked, clamped, float64 fallback, compiled) computes them; names, order and validation."""
import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mixquant_lite.layers import quantizable_layers
from mixquant_lite.quant import qe
from mixquant_lite.table import QETable, qe_table
from mixquant_lite.zoo.models import resnet20

qt = importlib.import_module("mixquant_lite.table")



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def r20():
    torch.manual_seed(0)
    return resnet20().eval()


def reference(model, bits, per_channel):
    return np.array([[qe(m.weight, b, per_channel=per_channel) for b in bits]
                     for _, m in quantizable_layers(model)])


def test_quantizable_layers_in_module_order(r20):
    names = [n for n, _ in quantizable_layers(r20)]
    expected = [n for n, m in r20.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert names == expected and names[0] == "conv1" and names[-1] == "fc"
    assert len(names) == 22  # 19 3x3 convs, 2 projection shortcuts, fc
    assert quantizable_layers(nn.Sequential(nn.ReLU())) == []


@pytest.mark.parametrize("per_channel", [False, True])
def test_table_matches_qe(r20, per_channel):
    t = qe_table(r20, per_channel=per_channel)
    assert t.bits == (2, 3, 4, 5, 6, 7, 8) and t.per_channel == per_channel
    np.testing.assert_allclose(t.values, reference(r20, t.bits, per_channel), rtol=1e-6)
    assert t.numel == {n: m.weight.numel() for n, m in quantizable_layers(r20)}
    assert t.total_numel == sum(t.numel.values())


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("chunk", [7, 100, 1000])
def test_chunking_does_not_change_the_numbers(monkeypatch, per_channel, chunk):
    # small chunks: several pieces per layer, rows split across pieces, zero-padded blocks
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.Linear(300, 7), nn.Linear(5, 1))
    monkeypatch.setattr(qt, "_CHUNK", chunk)
    t = qe_table(model, bits=[1, 3, 8, 16], per_channel=per_channel)
    np.testing.assert_allclose(t.values, reference(model, t.bits, per_channel), rtol=1e-6)


def test_clamp_is_applied_where_it_bites():
    # [-1, 1] at 2 bits: s = 2/3, z = round(1.5) = 2, and round(1 * 1.5) = 2 > qmax - z = 1
    w = torch.tensor([[-1.0, 1.0, 0.3]])
    grid = qt._layer_grid(w, (2,), False, "w")
    assert grid.need_clamp.any()
    sse = qt._layer_sse(w, (2,), False)
    assert sse[0] / 3 == pytest.approx(qe(w, 2), rel=1e-6)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=weights(dtypes=("float32", "float16", "bfloat16")),
       bits=st.lists(st.integers(1, 16), min_size=1, max_size=4, unique=True),
       per_channel=st.booleans())
def test_any_tensor_matches_qe(w, bits, per_channel):
    bits = tuple(sorted(bits))
    try:
        ref = [qe(w, b, per_channel=per_channel) for b in bits]
    except ValueError:  # a float32 step that overflows: refused by both
        with pytest.raises(ValueError):
            qt._table_from_weights([("w", w)], bits, per_channel)
        return
    t = qt._table_from_weights([("w", w)], bits, per_channel)
    # float32 block sums: a few ulps on adversarial tensors (seen: 1.19e-6 on a 625-weight
    # tensor of tiny equal values at 10 bits); a wrong grid or rounding is off by far more.
    np.testing.assert_allclose(t.values[0], ref, rtol=2e-6, atol=0)


def test_half_precision_models(r20):
    t32 = qe_table(r20)
    for dt in (torch.float16, torch.bfloat16):
        m = resnet20()
        m.load_state_dict(r20.state_dict())
        m = m.to(dt)
        ref = reference(m, t32.bits, False)  # qe() measures the fp16/bf16 weights in float32
        np.testing.assert_allclose(qe_table(m).values, ref, rtol=1e-6)


def test_layers_in_a_thread_pool(r20):
    """workers > 1: CPU layers run in a pool, the same numbers, torch's thread setting never
    touched, the first bad layer (module order) named."""
    serial = qe_table(r20, per_channel=True)
    n = torch.get_num_threads()
    pooled = qe_table(r20, per_channel=True, workers=2)
    assert torch.get_num_threads() == n
    bad = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        bad[2].weight[0, 0] = float("inf")
        bad[1].weight[1, 1] = float("nan")
    with pytest.raises(ValueError, match="layer '1'"):
        qe_table(bad, workers=2)
    assert torch.get_num_threads() == n
    np.testing.assert_array_equal(pooled.values, serial.values)
    with pytest.raises(ValueError, match="workers"):
        qe_table(r20, workers=0)


def test_no_process_wide_thread_change_from_a_fresh_thread(r20):
    """A thread that first touches torch during a table call keeps torch's setting."""
    import threading

    n = torch.get_num_threads()
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    qe_table(r20, workers=2)
    t.start()
    t.join()
    assert seen == [n] and torch.get_num_threads() == n


def test_read_only_mappings_and_pickle(r20):
    import copy
    import pickle

    t = qe_table(r20, bits=[2, 4])
    with pytest.raises(TypeError):
        t.numel["conv1"] = 1  # type: ignore[index]
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.layers == t.layers and dict(t2.numel) == dict(t.numel)
    np.testing.assert_array_equal(t2.values, t.values)
    assert copy.deepcopy(t).qe("fc", 4) == t.qe("fc", 4)


def test_module_and_function_names_differ():
    import mixquant_lite

    mod = importlib.import_module("mixquant_lite.table")
    assert mod.qe_table is qe_table and mod.QETable is QETable
    assert mixquant_lite.qe_table is qe_table  # the package attribute is the function
    assert "quantizable_layers" not in mod.__all__  # no re-exports of layers names (0.2)


def test_table_accessors(r20):
    t = qe_table(r20, bits=[8, 2, 4])
    assert t.bits == (2, 4, 8)
    assert t.qe("fc", 4) == t.values[-1, 1]
    df = t.to_frame()
    assert isinstance(df, pd.DataFrame) and df.index.name == "layer"
    assert list(df.index) == list(t.layers) and list(df.columns) == [2, 4, 8]
    assert df.loc["conv1", 8] == t.qe("conv1", 8)
    with pytest.raises(KeyError, match="nope"):
        t.qe("nope", 4)
    with pytest.raises(KeyError, match="candidate"):
        t.qe("fc", 5)
    assert "22 layers" in repr(t)
    with pytest.raises(ValueError):  # read-only values
        t.values[0, 0] = 1.0


def test_qe_falls_with_the_bit_width(r20):
    v = qe_table(r20, bits=range(1, 17)).values
    assert (np.diff(v, axis=1) < 0).all()


def test_validation(r20):
    with pytest.raises(ValueError, match="empty"):
        qe_table(r20, bits=[])
    with pytest.raises(ValueError, match="duplicated"):
        qe_table(r20, bits=[2, 2, 4])
    with pytest.raises(ValueError, match="bits"):
        qe_table(r20, bits=[0, 4])
    with pytest.raises(TypeError, match="bits"):
        qe_table(r20, bits=[2.5])
    with pytest.raises(ValueError, match="no Conv2d/Linear"):
        qe_table(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))
    with pytest.raises(TypeError, match="nn.Module"):
        qe_table("resnet20")
    bad = nn.Sequential(nn.Linear(3, 3), nn.Conv2d(3, 4, 1))
    with torch.no_grad():
        bad[1].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'1'.*NaN"):
        qe_table(bad)


def test_table_constructor_checks():
    with pytest.raises(ValueError, match="shape"):
        QETable(("a",), (2, 4), {"a": 3}, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="numel"):
        QETable(("a",), (2,), {"b": 3}, np.zeros((1, 1)))


def test_weights_are_not_modified(r20):
    before = {k: v.clone() for k, v in r20.state_dict().items()}
    qe_table(r20, per_channel=True)
    for k, v in r20.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.slow
def test_compiled_path_matches_eager(r20):
    """Opt-in torch.compile path: same numbers (or a warning and the eager path)."""
    eager = qe_table(r20)
    eager_pc = qe_table(r20, per_channel=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing compiler is reported, then eager runs
        comp = qe_table(r20, compiled=True)
        comp_pc = qe_table(r20, per_channel=True, compiled=True)
    np.testing.assert_allclose(comp.values, eager.values, rtol=1e-6)
    np.testing.assert_allclose(comp_pc.values, eager_pc.values, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("per_channel", [False, True])
def test_cuda_matches_cpu(r20, per_channel):
    cpu = qe_table(r20, per_channel=per_channel)
    gpu = qe_table(_cuda_copy(r20), per_channel=per_channel)
    np.testing.assert_allclose(gpu.values, cpu.values, rtol=1e-6)


def _cuda_copy(model):
    m = resnet20()
    m.load_state_dict(model.state_dict())
    return m.cuda().eval()
