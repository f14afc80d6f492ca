"""Fused CPU kernel for the QE table (optional; needs ``numba``, a PyPI wheel, no C compiler).

:func:`table_sse` computes, for every layer, ``sum((W - W_hat_b)^2)`` at every candidate
bit-width ``b`` with one read of the weights from memory:

- min and max of the layer (or of each output channel) in one compiled pass that also counts
  NaN/inf, which give every grid (:func:`mixquant_lite.quant.affine_grid`, as the eager path);
- one ``numba``-compiled loop walks the weights in blocks of ``BLOCK`` elements (4 KiB, in L1)
  and, while a block is hot, quantizes it at every bit-width and sums the squared errors in
  float32 (vectorised: the sum may be reassociated), adding each block's sum to a float64 total;
- ``W_hat`` is formed as the fused fake-quant kernels form it: ``q = rint(W * (1/s))`` in
  float32 (half to even), clamped to ``[-z, qmax - z]`` only where the layer's min/max show
  the clamp can bite, then ``q * s`` (no fused multiply-add), so ``W - W_hat`` is the kernel's;
- where float32 squares could under- or overflow (a total below ``numel * 2^-90`` or not
  finite), the layer is summed again with float64 squares.

No temporaries beyond a float32 view of the weights (a copy only for non-float32 weights), and no
process-wide state: layers run in a private pool of ``torch.get_num_threads()`` Python threads
(the compiled loop releases the GIL). The first call compiles the loops (about a second; cached
on disk by numba when the package folder is writable).

:func:`table_sse` returns ``None`` (the caller uses its eager torch path) when numba is not
installed, when a weight is not on the CPU, or when ``MIXQUANT_NO_NUMBA=1`` is set.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from .quant import affine_grid

# optional dependency, imported on first use (half a second): the eager torch path is the fallback
HAVE_NUMBA = importlib.util.find_spec("numba") is not None

__all__ = ["available", "table_sse", "one_torch_thread", "BLOCK"]

BLOCK = 1024  # weights per block: 4 KiB of float32, quantized at every bit-width while in L1
_TINY = 2.0**-90  # as qe_table: below numel * _TINY some float32 squares may have underflowed


def available() -> bool:
    """Whether the fused kernel can run (numba importable and not disabled by the
    environment variable ``MIXQUANT_NO_NUMBA=1``)."""
    return HAVE_NUMBA and os.environ.get("MIXQUANT_NO_NUMBA", "") != "1"


def _minmax_rows(x, mn, mx):  # pragma: no cover - compiled
    """``x`` ``(C * k,)`` float32 -> ``mn``, ``mx`` ``(C,)`` per row; returns the number of
    NaN/inf elements (then ``mn``/``mx`` are meaningless)."""
    n_rows = mn.shape[0]
    k = x.shape[0] // n_rows
    bits = x.view(np.uint32)
    bad = 0
    for c in range(n_rows):
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        nonfinite = 0
        for j in range(np.uint64(c * k), np.uint64((c + 1) * k)):
            v = x[j]
            lo = min(lo, v)
            hi = max(hi, v)
            nonfinite += (bits[j] & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
        mn[c] = lo
        mx[c] = hi
        bad += nonfinite
    return bad


def _sse_rows(x, scale, inv, qlo, qhi, clamp, out, wide):  # pragma: no cover - compiled
    """``x`` ``(C * k,)`` float32 (row ``c`` of the weights is ``x[c*k:(c+1)*k]``); ``scale,
    inv, qlo, qhi`` ``(nb, C)`` float32; ``clamp`` ``(C,)`` bool; ``out`` ``(nb, C)`` float64,
    incremented by the sums over each row of ``(W_hat - W)^2``. ``wide``: square in float64
    (slow, exact) instead of float32 per block."""
    n_rows = scale.shape[1]
    k = x.shape[0] // n_rows
    nb = scale.shape[0]
    for c in range(n_rows):
        for j0 in range(c * k, (c + 1) * k, BLOCK):
            # unsigned indices: no negative-index wraparound, so the loads are unit-stride
            ja, jb = np.uint64(j0), np.uint64(min(j0 + BLOCK, (c + 1) * k))
            for b in range(nb):
                s = scale[b, c]
                iv = inv[b, c]
                lo = qlo[b, c]
                hi = qhi[b, c]
                if wide:
                    acc64 = 0.0
                    for j in range(ja, jb):
                        xv = x[j]
                        q = np.rint(xv * iv)
                        if clamp[c]:
                            q = min(max(q, lo), hi)
                        d = np.float64(q * s - xv)
                        acc64 += d * d
                    out[b, c] += acc64
                elif clamp[c]:
                    acc = np.float32(0.0)
                    for j in range(ja, jb):
                        xv = x[j]
                        q = min(max(np.rint(xv * iv), lo), hi)
                        d = q * s - xv
                        acc += d * d
                    out[b, c] += acc
                else:
                    acc = np.float32(0.0)
                    for j in range(ja, jb):
                        xv = x[j]
                        d = np.rint(xv * iv) * s - xv
                        acc += d * d
                    out[b, c] += acc


_kernel = None
_lock = threading.Lock()


def _compiled():
    """``(minmax, sse)``: the compiled loops (numba dispatchers), created once."""
    global _kernel
    with _lock:
        if _kernel is None:
            import numba

            # min/max: no NaN assumed by the float compares (so they vectorise); NaN and inf
            # are counted from the exponent bits, integer work the flags do not touch.
            mm = numba.njit(nogil=True, cache=True, fastmath={"nnan", "nsz"})(_minmax_rows)
            # 'reassoc' only: lets LLVM vectorise the float32 sums; no contraction (FMA) and no
            # finite-math assumptions, so every W - W_hat is the IEEE float32 result.
            sse = numba.njit(nogil=True, cache=True, fastmath={"reassoc"})(_sse_rows)
            _kernel = (mm, sse)
    return _kernel


def _layer(name: str, w: torch.Tensor, bits: tuple[int, ...], per_channel: bool) -> np.ndarray:
    x = w.detach().float().contiguous().numpy().reshape(-1)  # float32: a view, no copy
    n_rows = w.shape[0] if per_channel else 1
    mn = np.empty(n_rows, np.float32)
    mx = np.empty(n_rows, np.float32)
    minmax, kern = _compiled()
    if minmax(x, mn, mx):  # one read: min, max and a count of NaN/inf
        raise ValueError(f"layer {name!r}'s weight contains NaN or inf values")
    label = f"layer {name!r}"
    scale, zp = affine_grid(mn, mx, bits, label)  # (nb, C) float32 step, int64 zero point
    inv = np.float32(1.0) / scale
    qmax = (2 ** np.asarray(bits, dtype=np.int64) - 1)[:, None]
    qlo, qhi = (-zp).astype(np.float32), (qmax - zp).astype(np.float32)
    # round(min/s) and round(max/s) bound every q: where they stay inside [-z, qmax - z] the
    # clamp cannot change any element of that row and is skipped.
    clamp = ((np.rint(mn[None, :] * inv) < qlo) | (np.rint(mx[None, :] * inv) > qhi)).any(0)
    f32 = np.float32
    args = (x, scale.astype(f32), inv.astype(f32), qlo, qhi, clamp)
    out = np.zeros(scale.shape, dtype=np.float64)
    kern(*args, out, False)
    sse = out.sum(1)
    if not (np.isfinite(sse).all() and (sse >= x.size * _TINY).all()):
        out[:] = 0.0
        kern(*args, out, True)
        sse = out.sum(1)
    return sse


def table_sse(
    named: list[tuple[str, torch.Tensor]],
    bits: tuple[int, ...],
    per_channel: bool,
    n_threads: int | None = None,
) -> list[np.ndarray] | None:
    """Sums of squared quantization errors of every layer at every bit-width.

    Args:
        named: ``[(layer name, weight tensor)]``; non-empty float tensors (checked by the caller).
        bits: candidate bit-widths, validated and ascending.
        per_channel: one grid per output channel (axis 0) instead of one per tensor.
        n_threads: layers computed concurrently (default ``torch.get_num_threads()``); a
            private thread pool, nothing process-wide is changed.

    Returns:
        One float64 array ``(len(bits),)`` per layer, in ``named`` order (squared weight
        units), or ``None`` when the kernel does not apply (see the module docstring).

    Raises:
        ValueError: a layer's weights contain NaN/inf (the first such layer in ``named``
            order is named), or a range too large for a float32 step.
    """
    if not available() or any(w.device.type != "cpu" for _, w in named):
        return None
    n = torch.get_num_threads() if n_threads is None else int(n_threads)
    n = max(1, min(n, len(named)))
    with torch.no_grad():
        if n == 1:
            return [_layer(name, w, bits, per_channel) for name, w in named]
        _compiled()  # create the dispatchers once, before the threads race for them
        order = sorted(range(len(named)), key=lambda i: -named[i][1].numel())  # big first
        with ThreadPoolExecutor(n) as pool:
            futures = {i: pool.submit(_layer, *named[i], bits, per_channel) for i in order}
            return [futures[i].result() for i in range(len(named))]



@contextmanager
def one_torch_thread() -> Iterator[None]:
    """``torch.set_num_threads(1)`` in the calling thread for the duration; its count is
    restored on exit.

    The eager QE table walks the weights in cache-sized chunks; each torch op on a chunk is
    short, and a multi-threaded one ends in an OpenMP barrier that waits for every thread of
    the team: when another process holds a core, each barrier waits for a time slice
    (measured on a busy 2-core machine, ResNet-50 with 2 threads: 0.12 s of CPU took 35 s).
    One thread per op, and a pool of Python threads over layers, do not wait on each other.

    Scope: torch's intra-op thread count is per thread (OpenMP's ``nthreads`` setting), so
    other threads of the caller keep theirs, and overlapping calls from several threads each
    restore their own. (Threads that first run a torch op during the call start with one
    thread, as torch gives new threads the last count set; the eager table's own pool does.)
    """
    saved = torch.get_num_threads()
    if saved != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)
