"""The eager QE table runs its torch ops on one thread for the call and restores the caller's
thread count (issue #19, section 3), also when calls overlap in several threads."""
from __future__ import annotations

import threading

import torch
from torch import nn

from mixquant_lite import _qe_kernels
from mixquant_lite.table import qe_table


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 4))


def test_eager_table_restores_the_callers_thread_count(monkeypatch):
    monkeypatch.setenv("MIXQUANT_NO_NUMBA", "1")
    before = torch.get_num_threads()
    seen = []
    real = _qe_kernels.one_torch_thread

    def spy():
        cm = real()

        class Wrap:
            def __enter__(self):
                cm.__enter__()
                seen.append(torch.get_num_threads())

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Wrap()

    monkeypatch.setattr(_qe_kernels, "one_torch_thread", spy)
    torch.set_num_threads(2)
    try:
        ref = qe_table(_model(), workers=1)
        pooled = qe_table(_model())  # default workers: the caller's thread count
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]  # inside the call: one torch thread
    assert (ref.values == pooled.values).all()  # same numbers with and without the pool


def test_the_scope_is_per_thread_and_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    inside, release = threading.Event(), threading.Event()
    counts = {}

    def hold():
        torch.set_num_threads(2)
        with _qe_kernels.one_torch_thread():
            counts["inside"] = torch.get_num_threads()
            inside.set()
            release.wait(10)
        counts["after"] = torch.get_num_threads()

    try:
        t = threading.Thread(target=hold)
        t.start()
        assert inside.wait(10)
        assert torch.get_num_threads() == 2  # this thread keeps its count meanwhile
        with _qe_kernels.one_torch_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        release.set()
        t.join(10)
        assert counts == {"inside": 1, "after": 2}
    finally:
        release.set()
        torch.set_num_threads(before)
