"""Shared fixtures."""
import socket

import pytest


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection fails, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
