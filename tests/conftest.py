"""Shared fixtures and the one hypothesis strategy for weight tensors."""
import socket

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


@st.composite
def weights(draw, dtypes=("float32", "float16", "bfloat16", "float64"), max_side=6):
    """Small tensors of many shapes, dtypes and magnitudes: random, constant, all-zero, on a
    coarse grid (exact ties at half steps are likely) and all-on-the-grid-but-one-tiny-value
    (float32 squares would underflow)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=max_side))
    dtype = _DTYPES[draw(st.sampled_from(dtypes))]
    mag = draw(st.sampled_from([1e-38, 1e-20, 1e-6, 1.0, 1e4, 1e20, 1e30]))
    if dtype == torch.float16:
        mag = min(max(mag, 1e-3), 1e4)  # stay inside float16's range
    n = int(np.prod(shape))
    kind = draw(st.sampled_from(["random", "random", "constant", "zeros", "grid", "one-off"]))
    if kind == "random":
        vals = draw(hnp.arrays(np.float64, n, elements=st.floats(-1, 1, width=32)))
    elif kind == "constant":
        vals = np.full(n, draw(st.floats(-1, 1, width=32)))
    elif kind == "zeros":
        vals = np.zeros(n)
    elif kind == "grid":
        vals = draw(hnp.arrays(np.float64, n, elements=st.integers(-8, 8))) / 8.0
    else:
        vals = np.zeros(n)
        vals[0], vals[-1] = 1.0, 1e-30 / mag
    return torch.tensor(vals * mag, dtype=torch.float64).reshape(shape).to(dtype)


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection fails, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: with small tensors two OpenMP threads only add
    synchronisation, which stalls badly when the 2-core test machine is busy. The numbers do
    not depend on it; the previous setting is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _shipped(name: str):
    from mixquant_lite.zoo.models import data_dir, load_pretrained

    if not (data_dir() / f"{name}.pt").is_file():  # a checkout without data/: skip, but a
        pytest.skip(f"shipped checkpoint {name} not in data/")  # bad hash still fails
    return load_pretrained(name)


@pytest.fixture(scope="session")
def resnet20_mnist5k():
    """The shipped ResNet-20 (MNIST-5k), loaded once per session after its SHA-256 check.
    Shared: tests must not modify it (every package function copies before changing)."""
    return _shipped("resnet20-mnist5k")


@pytest.fixture(scope="session")
def mobilenetv2_mnist5k():
    """The shipped MobileNetV2 (MNIST-5k), loaded once per session; not to be modified."""
    return _shipped("mobilenetv2-mnist5k")
