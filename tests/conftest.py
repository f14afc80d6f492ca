"""Shared fixtures."""
import socket

import pytest
import torch


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
