"""The QE table: ``QE(W_l, b)`` for every quantizable layer ``l`` and candidate bit-width ``b``.

Definitions: ``docs/method.md`` ("QE" and "The QE table"). The table holds
``QE(W, b) = mean((W - W_hat_b)^2)`` for the weights of every quantizable layer
(:mod:`mixquant_lite.layers`: ``Conv2d`` and ``Linear``; biases stay f32), named by module path,
in module order.

Fast and exact: the same numbers as :func:`mixquant_lite.quant.qe` (tested equal). Each layer's
min/max is read once and gives every bit-width's grid; the weights are walked in cache-sized
chunks of ``_CHUNK``, each quantized at all bit-widths at once exactly as the fused kernel does
(``W - W_hat`` bit-for-bit the kernel's); squares are summed in float32 blocks of ``_BLOCK`` and
accumulated in float64 (float64 throughout where float32 could under/overflow). Extra memory:
one ``(n_bits, _CHUNK)`` buffer. ``compiled=True``: one ``torch.compile``-d kernel per layer;
with numba installed, the fused kernel of :mod:`._qe_kernels`; the same code runs on CUDA.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import _qe_kernels
from .groups import group_rows
from .layers import quantizable_layers, weight_of
from .quant import affine_grid, check_bit_list, check_bits, minmax_range

__all__ = ["QETable", "qe_table"]

_CHUNK = 1 << 16  # weights per chunk on CPU: a 7 x 256 KiB buffer stays in L3 (measured best)
_CHUNK_CUDA = 1 << 20  # on a GPU, launches cost more than memory: bigger chunks
_BLOCK = 1024  # float32 partial sums of squares over this many elements, then float64
# A float32 sum of squares below numel * 2^-90 (or not finite) may hide under/overflow: float64
_TINY = 2.0**-90


@dataclass(frozen=True, eq=False)
class QETable:
    """QE of every layer at every candidate bit-width.

    Attributes:
        layers: module paths, in module order.
        bits: candidate bit-widths, ascending.
        numel: ``{layer: number of weights}`` (bias excluded).
        values: float64 array ``(len(layers), len(bits))``; ``values[i, j] = QE(layers[i],
            bits[j])`` in squared weight units.
        per_channel: whether the grids were per output channel.
        group_size: ``None``, or the group size of per-group grids (:mod:`.groups`).
        measure: what ``values`` holds. ``"qe"`` (default): the mean squared weight error per
            weight, as above. Any other name (e.g. ``"hessian"``, ``"fisher"``, ``"output"``):
            a data-aware sensitivity whose entries are already *additive per-layer costs* of
            quantizing that layer at that bit-width (e.g. a Hessian-weighted perturbation, an
            output divergence), so that a plan's cost is their sum (see :meth:`cost_matrix`).
    """

    layers: tuple[str, ...]
    bits: tuple[int, ...]
    numel: Mapping[str, int]
    values: np.ndarray
    per_channel: bool = False
    measure: str = "qe"
    group_size: int | None = None
    _row: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.shape != (len(self.layers), len(self.bits)):
            raise ValueError(
                f"values must have shape {(len(self.layers), len(self.bits))}, got {values.shape}"
            )
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("layers has duplicated names")
        if set(self.numel) != set(self.layers):
            raise ValueError("numel must name exactly the table's layers")
        if not isinstance(self.measure, str) or not self.measure:
            raise ValueError(f"measure must be a non-empty string, got {self.measure!r}")
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("values must be finite and >= 0")
        values.setflags(write=False)
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "bits", tuple(self.bits))
        object.__setattr__(self, "values", values)
        numel = {n: int(self.numel[n]) for n in self.layers}
        object.__setattr__(self, "numel", MappingProxyType(numel))
        rows = {n: i for i, n in enumerate(self.layers)}
        object.__setattr__(self, "_row", MappingProxyType(rows))

    def __reduce__(self):  # read-only mappings do not pickle: rebuild from plain values
        return (type(self), (self.layers, self.bits, dict(self.numel), np.array(self.values),
                             self.per_channel, self.measure, self.group_size))

    def qe(self, layer: str, bits: int) -> float:
        """QE of ``layer`` at ``bits`` (a candidate of the table)."""
        if layer not in self._row:
            raise KeyError(f"layer {layer!r} is not in the table (layers: {list(self.layers)})")
        bits = check_bits(bits)
        if bits not in self.bits:
            raise KeyError(f"bits={bits} is not a candidate of the table {list(self.bits)}")
        return float(self.values[self._row[layer], self.bits.index(bits)])

    def cost_matrix(self) -> np.ndarray:
        """Additive cost of each (layer, candidate), float64 ``(len(layers), len(bits))``.

        For ``measure="qe"`` the total squared weight error ``numel_l * QE(l, b)`` (squared weight
        units); for any other measure ``values`` itself. :func:`~mixquant_lite.search.
        plan_for_budget` minimises the sum of these over the chosen candidates.
        """
        if self.measure == "qe":
            return self.values * self.numel_array().astype(np.float64)[:, None]
        return np.array(self.values, dtype=np.float64)

    def numel_array(self) -> np.ndarray:
        """Weights per layer as an int64 array in ``layers`` order."""
        return np.array([self.numel[n] for n in self.layers], dtype=np.int64)

    @property
    def total_numel(self) -> int:
        """Number of weights of all layers together."""
        return int(sum(self.numel.values()))

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame: index ``layer``, one column per bit-width (ints)."""
        return pd.DataFrame(
            self.values.copy(),
            index=pd.Index(list(self.layers), name="layer"),
            columns=pd.Index(list(self.bits), name="bits"),
        )

    def __repr__(self) -> str:
        return (
            f"QETable({len(self.layers)} layers, {self.total_numel:,} weights, "
            f"bits={list(self.bits)}, per_channel={self.per_channel}"
            + ("" if self.group_size is None else f", group_size={self.group_size}")
            + ("" if self.measure == "qe" else f", measure={self.measure!r}") + ")"
        )


def qe_table(
    model: nn.Module,
    bits: Iterable[int] = range(2, 9),
    *,
    per_channel: bool = False,
    compiled: bool = False,
    workers: int | None = None,
    group_size: int | None = None,
) -> QETable:
    """The QE table of ``model``'s ``Conv2d``/``Linear`` weights (``docs/method.md``, "QE").

    Args:
        model: any module; its weights are read, never modified (any device, any float dtype;
            fp16/bf16 are measured in float32).
        bits: candidate bit-widths (ints in ``1..16``, no duplicates; stored ascending).
        per_channel: one grid per output channel (axis 0) instead of one per tensor.
        compiled: opt-in ``torch.compile``-d kernel (needs inductor: a C++ compiler on CPU,
            triton on GPU); on failure a warning and the eager path (values agree to ~1e-7).
        workers: Python threads over CPU layers (big first); ``None``: the caller's
            ``torch.get_num_threads()``. The eager path's torch ops run on one thread for the
            call, restored after (:func:`._qe_kernels.one_torch_thread`: multi-threaded small
            ops stall in OpenMP barriers on a busy machine); numba has a pool of that size.
        group_size: ``32``, ``64`` or ``128``: per-group grids along each layer's input
            dimension (:mod:`.groups`), measured as per-channel QE of the group-rows view.

    Raises:
        ValueError: no ``Conv2d``/``Linear`` layer, bad ``bits``, or a layer's weights contain
            NaN/inf (the message names the layer).
    """
    cand = check_bit_list(bits)
    named = quantizable_layers(model)
    if not named:
        raise ValueError(f"model {type(model).__name__} has no Conv2d/Linear layers to quantize")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be None or an int >= 1, got {workers!r}")
    weights = [(n, weight_of(m)) for n, m in named]
    if group_size is not None:  # per group = per channel of the (C * K / g, g) view
        weights = [(n, group_rows(w.detach(), group_size, f"layer {n!r}")) for n, w in weights]
    t = _table_from_weights(weights, cand, per_channel or group_size is not None, compiled, workers)
    return t if group_size is None else dataclasses.replace(t, group_size=int(group_size))


def _table_from_weights(
    named: list[tuple[str, torch.Tensor]],
    bits: tuple[int, ...],
    per_channel: bool,
    compiled: bool = False,
    workers: int | None = None,
) -> QETable:
    for name, w in named:
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.numel() == 0:
            raise ValueError(f"layer {name!r}: weight must be a non-empty float tensor")
    fused = _compiled_kernel() if compiled else None
    workers = torch.get_num_threads() if workers is None else workers
    pooled = (fused is None and workers > 1 and len(named) > 1
              and all(w.device.type == "cpu" for _, w in named))
    local = threading.local()

    def layer_sse(i: int) -> np.ndarray:
        if not hasattr(local, "work"):
            local.work = _Work(fused=fused)  # a work buffer per thread
        name, w = named[i]
        return _layer_sse(w.detach(), bits, per_channel, local.work, name)

    # CPU weights, numba installed: one fused compiled pass per layer (see _qe_kernels); it uses
    # as many threads as torch does (read, never set).
    fast = None if compiled else _qe_kernels.table_sse(named, bits, per_channel)
    one = pooled or (fused is None and all(w.device.type == "cpu" for _, w in named))
    with torch.no_grad(), (_qe_kernels.one_torch_thread() if one and fast is None
                           else nullcontext()):
        if fast is not None:
            sse = fast
        elif pooled:
            with ThreadPoolExecutor(workers) as pool:
                order = sorted(range(len(named)), key=lambda i: -named[i][1].numel())
                futures = {i: pool.submit(layer_sse, i) for i in order}  # big layers first
                sse = [futures[i].result() for i in range(len(named))]  # module order: the
                # error of the first bad layer is the one raised
        else:
            sse = [layer_sse(i) for i in range(len(named))]
    values = np.stack([s / w.numel() for s, (_, w) in zip(sse, named, strict=True)])
    numel = {name: int(w.numel()) for name, w in named}
    return QETable(tuple(n for n, _ in named), bits, numel, values, per_channel)


@dataclass
class _Work:
    """State shared by the layers of one table: a work buffer per device, reused, and the
    compiled kernel (``None``: eager; set to ``None`` when compiling fails)."""

    buffers: dict[torch.device, torch.Tensor] = field(default_factory=dict)
    fused: Callable | None = None


class _Grid(NamedTuple):
    """Quantization grids of one layer at every bit-width, as float32 tensors ``(nb, C, 1)``
    (``C`` = 1 per tensor): step, ``1/s``, and the bounds ``[-z, qmax - z]`` of ``q - z``."""

    scale: torch.Tensor
    inv: torch.Tensor
    qlo: torch.Tensor
    qhi: torch.Tensor
    need_clamp: np.ndarray  # (C,) bool: channels where the clamp can change some element


def _layer_grid(w: torch.Tensor, bits: tuple[int, ...], per_channel: bool, name: str) -> _Grid:
    label = f"layer {name!r}" if name != "w" else "w"
    mn, mx = minmax_range(w, per_channel, f"{label}'s weight" if name != "w" else "w")
    scale, zp = affine_grid(mn, mx, bits, label)  # (nb, C)
    inv = np.float32(1.0) / scale  # float32 1/s, as the fused kernels compute it
    qmax = (2 ** np.asarray(bits, dtype=np.int64) - 1)[:, None]
    qlo, qhi = -zp, qmax - zp
    # round(min * (1/s)) and round(max * (1/s)) bound every q (both steps are monotone); where
    # they stay in [-z, qmax - z] the quantizer's clamp cannot change any element and is skipped.
    need_clamp = ((np.rint(mn[None, :] * inv) < qlo) | (np.rint(mx[None, :] * inv) > qhi)).any(0)

    def col(a: np.ndarray) -> torch.Tensor:  # (nb, C) numpy -> (nb, C, 1) float32 tensor
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(w.device)[..., None]

    return _Grid(col(scale), col(inv), col(qlo), col(qhi), need_clamp)


def _layer_sse(
    w: torch.Tensor,
    bits: tuple[int, ...],
    per_channel: bool,
    work: _Work | None = None,
    name: str = "w",
) -> np.ndarray:
    """Sum over the elements of ``w`` of ``(W - W_hat_b)^2`` for every ``b`` in ``bits``.

    Returns a float64 array of shape ``(len(bits),)`` in squared weight units.
    """
    grid = _layer_grid(w, bits, per_channel, name)
    x2d = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    work = _Work() if work is None else work
    sse = None
    if work.fused is not None:
        try:
            sse = _fused_sse(work.fused, x2d, grid, work.buffers)
        except Exception as e:  # no compiler / backend: it is opt-in, so go eager, loudly
            warnings.warn(
                f"qe_table(compiled=True): torch.compile failed ({type(e).__name__}: {e}); "
                "using the eager path",
                RuntimeWarning,
                stacklevel=4,
            )
            work.fused = None
    if sse is None:
        sse = _eager_sse(x2d, grid, work.buffers, exact=False)
    if not (np.isfinite(sse).all() and (sse >= w.numel() * _TINY).all()):
        sse = _eager_sse(x2d, grid, work.buffers, exact=True)  # f32 squares may under/overflow
    return sse


def _eager_sse(
    x2d: torch.Tensor, grid: _Grid, buffers: dict[torch.device, torch.Tensor], exact: bool
) -> np.ndarray:
    """Chunked eager computation (see the module docstring). ``x2d``: ``(C, k)`` weights with
    one grid per row (``C`` = 1 per tensor). ``exact``: sum the squares in float64 throughout."""
    n_rows, k = x2d.shape
    nb = grid.scale.shape[0]
    dev = x2d.device
    chunk = _CHUNK_CUDA if dev.type == "cuda" else _CHUNK
    width = -(-chunk // _BLOCK) * _BLOCK
    buf = buffers.get(dev)
    if buf is None or buf.shape[0] < nb:
        buf = buffers[dev] = torch.empty(nb, width, device=dev, dtype=torch.float32)
    buf = buf[:nb]

    # Pieces of at most `chunk` weights: (x, first channel, number of channels). torch.split
    # makes all the views in one call; per tensor, x2d is a single row.
    if k >= chunk:
        pieces = [(x, r, 1) for r in range(n_rows) for x in torch.split(x2d[r], chunk)]
    else:
        step = chunk // k
        pieces = [(x, i * step, x.shape[0]) for i, x in enumerate(torch.split(x2d, step))]
    views: dict = {}  # buffer views by shape, reused across pieces

    def view(key, shape):
        v = views.get(key)
        if v is None:
            v = views[key] = buf[:, : math.prod(shape)].view(nb, *shape)
        return v

    parts = []
    for x, r0, r in pieces:
        x = x.float()  # a no-op for float32 weights
        m = x.numel()
        bb = view(x.shape, x.shape)
        # grid of this piece: (nb, r, 1), or (nb, 1) for a 1-D piece of one channel
        sel = r0 if x.dim() == 1 else slice(r0, r0 + r)
        torch.mul(x, grid.inv[:, sel], out=bb)  # t = W * (1/s)
        bb.round_()  # half to even, like the kernels' nearbyint
        if grid.need_clamp[r0 : r0 + r].any():
            torch.clamp(bb, grid.qlo[:, sel], grid.qhi[:, sel], out=bb)  # q - z in range
        bb.mul_(grid.scale[:, sel])  # W_hat = (q - z) * s, rounded to float32 like the kernel's
        bb.sub_(x)  # W_hat - W: the sign does not matter once squared
        if exact:
            d = buf[:, :m].double()
            parts.append((d * d).sum(1, keepdim=True))
            continue
        mp = -(-m // _BLOCK) * _BLOCK
        if mp > m:
            buf[:, m:mp].zero_()  # zero padding adds nothing to a sum of squares
        parts.append(torch.linalg.vector_norm(view(mp, (mp // _BLOCK, _BLOCK)), dim=2))
    if exact:
        return torch.cat(parts, 1).sum(1).cpu().numpy()
    norms = torch.cat(parts, 1).double()
    return (norms * norms).sum(1).cpu().numpy()


# ------------------------------------------------------------------------ opt-in compiled path


def _block_sse(x: torch.Tensor, inv, scale, qlo, qhi) -> torch.Tensor:
    """``x`` ``(R, K)``, grids ``(nb, R or 1, 1)`` -> float32 ``(nb, R)``: sum over ``K`` of
    ``(W_hat - W)^2``, with ``W_hat`` formed as the fused fake-quant kernels form it."""
    t = torch.round(x[None] * inv)
    t = torch.minimum(torch.maximum(t, qlo), qhi)
    d = t * scale - x[None]
    return (d * d).sum(-1)


@functools.lru_cache(maxsize=1)
def _compiled_kernel() -> Callable:
    return torch.compile(_block_sse, dynamic=True)


_MAX_ROW = 8192  # longest float32 row sum the compiled path does (accuracy); else eager


def _fused_sse(
    fused: Callable, x2d: torch.Tensor, grid: _Grid, buffers: dict
) -> np.ndarray | None:
    """The compiled path; ``None`` where it does not apply (the caller then goes eager)."""
    n_rows, k = x2d.shape
    g = grid.inv, grid.scale, grid.qlo, grid.qhi
    if n_rows == 1:  # per tensor: rows of _BLOCK weights, the tail eagerly
        flat = x2d[0]
        main = flat.numel() // _BLOCK * _BLOCK
        if main == 0:
            return None
        sse = fused(flat[:main].float().view(-1, _BLOCK), *g).double().sum(1).cpu().numpy()
        if main < flat.numel():
            sse = sse + _eager_sse(flat[main:].view(1, -1), grid, buffers, exact=False)
        return sse
    if k > _MAX_ROW:
        return None
    return fused(x2d.float(), *g).double().sum(1).cpu().numpy()
