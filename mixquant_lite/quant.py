"""The asymmetric (affine) uniform quantizer (definitions: ``docs/method.md``, "Quantizer").

This module is the package's only quantizer. For a tensor ``x`` and bit-width ``b`` (integer
levels ``0 .. 2^b - 1``):

- :func:`choose_qparams`: the range ``lo = min(x.min(), 0)``, ``hi = max(x.max(), 0)``
  (``range_method="minmax"``), or that range shrunk by the factor ``r`` in ``1.00, 0.99, ...,
  0.21`` that minimises ``sum |x - x_hat|^2.4`` (``"mse"``, BRECQ's initialisation); then the
  step ``s = (hi - lo) / (2^b - 1)`` and the zero point ``z = clamp(round(-lo / s), 0, 2^b - 1)``,
  one pair per tensor, per output channel (axis 0), or per group of ``g`` consecutive weights
  along the input dimension (``"per_group"``, layout and storage in :mod:`.groups`).
- :func:`quantize_affine`: the integer codes ``q = clamp(round(x * (1/s)) + z, 0, 2^b - 1)``.
- :func:`dequantize_affine`: ``x_hat = (q - z) * s``.
- :func:`fake_quantize_affine`: both at once, by PyTorch's fused kernels
  (``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``); where
  a gradient with respect to the step is needed (learned activation steps), the same float32
  arithmetic written with a straight-through ``round``, which is bit-for-bit equal to the kernels.

``round`` is round-half-to-even (the kernels' ``nearbyint``) and ``1/s`` is taken in float32, as
the kernels take it; so ``dequantize_affine(quantize_affine(x))`` equals ``fake_quantize_affine``
exactly (tested). Tensors in fp16/bf16 are quantized in float32 and cast back; QE is accumulated in
float64. The vocabulary follows torchao: ``quantize_affine`` returns integers,
``fake_quantize_affine`` returns floats on the grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .groups import GROUP_SIZES, check_group_size, group_rows, input_dim
from .validate import MAX_BITS as MAX_BITS
from .validate import MIN_BITS as MIN_BITS
from .validate import check_bit_list, check_bits

__all__ = [
    "choose_qparams",
    "quantize_affine",
    "dequantize_affine",
    "fake_quantize_affine",
    "fake_quantize",
    "qe",
    "check_bits",
    "check_bit_list",
    "check_granularity",
    "RANGE_METHODS",
    "MIN_SCALE",
    "minmax_range",
    "affine_grid",
    "GRANULARITIES",
    "GROUP_SIZES",
]

RANGE_METHODS = ("minmax", "mse")
GRANULARITIES = ("per_tensor", "per_channel", "per_group")
# A step smaller than this would make 1/s overflow in float32; an all-zero (or subnormal-range)
# tensor gets this step instead and round-trips exactly.
MIN_SCALE = 2.0**-100
# "mse" range search (BRECQ's UniformAffineQuantizer): 80 shrink ratios, L_2.4 error.
MSE_RATIOS = tuple(1.0 - 0.01 * i for i in range(80))
MSE_P = 2.4
_MSE_SAMPLE = 1 << 18  # error measured on at most this many evenly strided values per group
_MSE_CHUNK = 1 << 22  # elements of the (ratios, groups, values) work tensor at a time


def check_range_method(range_method: str, name: str = "range_method") -> str:
    """``range_method`` after checking it is one of :data:`RANGE_METHODS`."""
    if range_method not in RANGE_METHODS:
        raise ValueError(f"{name} must be one of {RANGE_METHODS}, got {range_method!r}")
    return range_method


def check_granularity(granularity: str) -> str:
    """``granularity`` after checking it is one of :data:`GRANULARITIES`."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


def _granularity(per_channel: bool) -> str:
    return "per_channel" if per_channel else "per_tensor"


def _check_tensor(x: torch.Tensor, name: str = "w", *, per_channel: bool = False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if per_channel and x.dim() < 1:
        raise ValueError(f"per_channel=True needs {name} with at least one dimension")
    return x


def minmax_range(
    w: torch.Tensor, per_channel: bool, name: str = "w"
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of ``w`` (per output channel or of the whole tensor) in one pass.

    Returns two float32 numpy arrays of shape ``(C,)`` (``(1,)`` per tensor). A NaN anywhere
    makes the min/max NaN and an inf makes one of them infinite, so checking these two numbers
    replaces a separate ``isfinite`` pass over the weights.
    """
    x = w.detach()
    if per_channel:  # (aminmax along a dim is several times slower than amin and amax here)
        x = x.reshape(x.shape[0], -1)
        mn, mx = x.amin(1), x.amax(1)
    else:
        mn, mx = torch.aminmax(x)
    mn_np = mn.float().reshape(-1).cpu().numpy()
    mx_np = mx.float().reshape(-1).cpu().numpy()
    if not (np.isfinite(mn_np).all() and np.isfinite(mx_np).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return mn_np, mx_np


def affine_grid(
    mn: np.ndarray, mx: np.ndarray, bits: tuple[int, ...], name: str = "w"
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and zero points for every bit-width in ``bits`` from per-group minima and maxima.

    Returns ``(scale, zero_point)``: float32 and int64 arrays of shape ``(len(bits), C)``.
    The range arithmetic runs in float64 so that ``hi - lo`` of two large float32 values does
    not overflow; the step is then rounded to float32, as the fused kernels take it.
    """
    lo = np.minimum(mn.astype(np.float64), 0.0)
    hi = np.maximum(mx.astype(np.float64), 0.0)
    qmax = (2.0 ** np.asarray(bits, dtype=np.float64) - 1.0)[:, None]
    scale64 = np.maximum((hi - lo)[None, :] / qmax, MIN_SCALE)
    with np.errstate(over="ignore"):
        scale = scale64.astype(np.float32)
    if not np.isfinite(scale).all():
        raise ValueError(f"{name}'s range is too large for a float32 quantization step")
    zp = np.clip(np.rint(-lo[None, :] / scale.astype(np.float64)), 0.0, qmax).astype(np.int64)
    return scale, zp


def _kernel_round_trip(
    x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x * (1/s)) + z, 0, qmax) - z) * s`` in float32 with broadcastable ``s``,
    ``z`` (float32): the fused kernels' arithmetic, written with plain ops."""
    return (torch.clamp(torch.round(x * (1.0 / scale)) + zp, 0, qmax) - zp) * scale


def _mse_grid(
    x: torch.Tensor, mn: np.ndarray, mx: np.ndarray, bits: int, per_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The ``"mse"`` range: per group, the grid of the shrink ratio in :data:`MSE_RATIOS` with
    the smallest ``sum |x - x_hat|^2.4`` (first, i.e. widest, among ties). Returns float32
    ``scale`` and int64 ``zero_point`` arrays of shape ``(C,)``."""
    ratios = np.asarray(MSE_RATIOS, dtype=np.float64)
    n_groups = len(mn)
    # Every (ratio, group) is a group of its own for affine_grid: (R * C,) minima and maxima.
    mn_r = (ratios[:, None] * mn.astype(np.float64)[None, :]).reshape(-1)
    mx_r = (ratios[:, None] * mx.astype(np.float64)[None, :]).reshape(-1)
    scale, zp = affine_grid(mn_r, mx_r, (bits,))
    scale, zp = scale.reshape(len(ratios), n_groups), zp.reshape(len(ratios), n_groups)
    flat = x.detach().float().reshape(n_groups, -1)
    if flat.shape[1] > _MSE_SAMPLE:  # the range comes from all values, the error from a sample
        flat = flat[:, :: flat.shape[1] // _MSE_SAMPLE + 1]
    s_t = torch.from_numpy(scale).to(flat.device)[..., None]  # (R, C, 1)
    z_t = torch.from_numpy(zp.astype(np.float32)).to(flat.device)[..., None]
    step = max(1, _MSE_CHUNK // flat.numel())
    errs = []
    for i in range(0, len(ratios), step):
        xq = _kernel_round_trip(flat[None], s_t[i : i + step], z_t[i : i + step], 2**bits - 1)
        errs.append((flat[None] - xq).abs().pow(MSE_P).sum(2))  # (r, C)
    best = torch.cat(errs).argmin(0).cpu().numpy()  # argmin: the first among ties
    cols = np.arange(n_groups)
    return scale[best, cols], zp[best, cols]


def choose_qparams(
    x: torch.Tensor,
    bits: int,
    granularity: str = "per_tensor",
    range_method: str = "minmax",
    group_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step and zero point of ``x`` at ``bits`` (``docs/method.md``, "Quantizer").

    Args:
        x: a float tensor (weights ``(C_out, ...)`` or activations); read, never modified.
        bits: ``1..16``.
        granularity: ``"per_tensor"``, ``"per_channel"`` (one grid per index of axis 0) or
            ``"per_group"`` (one grid per ``group_size`` consecutive weights of a row of
            ``x.reshape(C, K)``; ``K`` must be a multiple of ``group_size``).
        range_method: ``"minmax"`` (the range of ``x``, 0 included) or ``"mse"`` (that range
            shrunk to minimise the ``L_2.4`` round-trip error, per group).
        group_size: ``32``, ``64`` or ``128``, only (and always) with ``"per_group"``.

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors of shape ``()`` per tensor, ``(C,)``
        per channel, ``(C, K / group_size)`` per group, on ``x``'s device (units of ``x``).

    Raises:
        TypeError / ValueError: bad ``bits``, ``granularity``, ``range_method`` or
        ``group_size``; a non-float, empty or non-finite ``x``.
    """
    bits = check_bits(bits)
    gran = check_granularity(granularity)
    per_channel = gran != "per_tensor"
    check_range_method(range_method)
    _check_tensor(x, "x", per_channel=per_channel)
    if (group_size is not None) != (gran == "per_group"):
        raise ValueError(f"group_size (one of {GROUP_SIZES}) goes with granularity='per_group' "
                         f"and only with it; got group_size={group_size!r}, {gran!r}")
    rows = x.shape[0] if per_channel else 1
    if gran == "per_group":
        x = group_rows(x, group_size, "x")  # type: ignore[arg-type]
    mn, mx = minmax_range(x, per_channel, "x")
    if range_method == "minmax":
        scale2, zp2 = affine_grid(mn, mx, (bits,), "x")
        scale, zp = scale2[0], zp2[0]
    else:
        scale, zp = _mse_grid(x, mn, mx, bits, per_channel)
    scale_t = torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32)).to(x.device)
    zp_t = torch.from_numpy(np.ascontiguousarray(zp, dtype=np.int32)).to(x.device)
    if not per_channel:
        return scale_t[0], zp_t[0]
    shape = (rows, -1) if gran == "per_group" else (rows,)
    return scale_t.reshape(shape), zp_t.reshape(shape)


def _check_qparams(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor
) -> None:
    if not isinstance(scale, torch.Tensor) or not isinstance(zero_point, torch.Tensor):
        raise TypeError("scale and zero_point must be tensors (from choose_qparams)")
    if scale.shape != zero_point.shape or scale.dim() > 2:
        raise ValueError(
            f"scale and zero_point must both have shape (), (C,) or (C, G), got "
            f"{tuple(scale.shape)} and {tuple(zero_point.shape)}"
        )
    if scale.dim() >= 1 and (x.dim() < scale.dim() or x.shape[0] != scale.shape[0]):
        kind = "per-channel" if scale.dim() == 1 else "per-group"
        raise ValueError(
            f"{kind} scale of {scale.shape[0]} channels (shape {tuple(scale.shape)}) does not "
            f"fit a tensor of shape {tuple(x.shape)} (axis 0)"
        )
    if scale.dim() == 2:
        k = input_dim(x.shape)
        if k % scale.shape[1]:
            raise ValueError(f"{scale.shape[1]} groups do not divide the input dimension {k}")
        check_group_size(k // scale.shape[1], k, "x")


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel ``(C,)`` tensor viewed as ``(C, 1, ...)`` against ``x``, a per-group
    ``(C, G)`` one as ``(C, G, 1)`` against ``x`` viewed by :func:`_grouped`; scalars as is."""
    if t.dim() == 2:
        return t[..., None]
    return t.reshape(-1, *[1] * (x.dim() - 1)) if t.dim() == 1 else t


def _grouped(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(C, G, g)`` for a per-group ``scale`` ``(C, G)``; otherwise ``x`` itself."""
    return x.reshape(scale.shape[0], scale.shape[1], -1) if scale.dim() == 2 else x


def quantize_affine(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> torch.Tensor:
    """Integer codes ``q = clamp(round(x * (1/s)) + z, 0, 2^b - 1)``, same shape as ``x``.

    ``scale`` / ``zero_point`` as returned by :func:`choose_qparams` (shape ``()``, ``(C,)``
    for axis 0, or ``(C, G)`` per group). Returns ``torch.uint8`` for ``bits <= 8``, else
    ``torch.int32``.
    """
    bits = check_bits(bits)
    _check_tensor(x, "x")
    _check_qparams(x, scale, zero_point)
    xf = _grouped(x.detach().float(), scale)
    s, z = _bcast(scale.float(), xf), _bcast(zero_point.float(), xf)
    q = torch.clamp(torch.round(xf * (1.0 / s)) + z, 0, 2**bits - 1)
    return q.to(torch.uint8 if bits <= 8 else torch.int32).reshape(x.shape)


def dequantize_affine(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``x_hat = (q - z) * s`` in float32 (then cast to ``dtype``), same shape as ``q``."""
    _check_qparams(q, scale, zero_point)
    qg = _grouped(q, scale)
    s, z = _bcast(scale.float(), qg), _bcast(zero_point.float(), qg)
    return ((qg.float() - z) * s).to(dtype).reshape(q.shape)


def fake_quantize_affine(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> torch.Tensor:
    """Quantize-dequantize ``x`` on the grid ``(scale, zero_point)``; same shape and dtype.

    Without a gradient for ``scale`` this is PyTorch's fused kernel (its gradient with respect
    to ``x`` is the straight-through one, zero where the clamp bites). When ``scale`` requires
    a gradient (a learned step), the same float32 arithmetic with a straight-through ``round``,
    so that ``d x_hat / d s = round(x/s) - x/s`` inside the range and ``-z`` or ``qmax - z``
    outside it (LSQ); its values equal the kernel's bit for bit.
    """
    bits = check_bits(bits)
    _check_tensor(x, "x")
    _check_qparams(x, scale, zero_point)
    qmax = 2**bits - 1
    xf = _grouped(x.float(), scale)
    if scale.requires_grad and torch.is_grad_enabled():
        s, z = _bcast(scale.float(), xf), _bcast(zero_point.float().detach(), xf)
        t = xf * (1.0 / s)
        t = t + (torch.round(t) - t).detach()  # straight-through round
        out = (torch.clamp(t + z, 0, qmax) - z) * s
    elif scale.dim() >= 1:  # per channel, or per group as channels of a (C * G, g) view
        out = torch.fake_quantize_per_channel_affine(
            xf.reshape(scale.numel(), -1), scale.float().reshape(-1),
            zero_point.to(torch.int32).reshape(-1), 0, 0, qmax,
        )
    else:
        out = torch.fake_quantize_per_tensor_affine(
            xf, float(scale), int(zero_point), 0, qmax
        )
    return out.reshape(x.shape).to(x.dtype)


def fake_quantize(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "minmax",
    group_size: int | None = None,
) -> torch.Tensor:
    """``W_hat``: :func:`choose_qparams` then :func:`fake_quantize_affine` (round to nearest).

    ``group_size`` (32, 64 or 128) selects ``"per_group"`` grids (``per_channel`` is then
    ignored: groups are inside channels). Returns a tensor of the same shape, dtype and device
    as ``w`` (simulated quantization).
    """
    gran = "per_group" if group_size is not None else _granularity(per_channel)
    _check_tensor(w, per_channel=gran != "per_tensor")
    scale, zp = choose_qparams(w, bits, gran, range_method, group_size)
    return fake_quantize_affine(w.detach(), scale, zp, bits)


def qe(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "minmax",
    group_size: int | None = None,
) -> float:
    """Quantization error ``QE(W, b) = mean((W - W_hat)^2)`` (``docs/method.md``, "QE").

    ``W`` is measured in float32 (fp16/bf16 are upcast exactly), ``W_hat`` is
    :func:`fake_quantize`'s float32 result, and the squared differences are summed in float64.
    Returns a Python float in the units of ``w`` squared (0.0 for a constant tensor).

    Raises:
        ValueError: the error is not finite (the range was too large for float32 arithmetic).
    """
    x = w.detach().float()
    d = (x - fake_quantize(x, bits, per_channel=per_channel, range_method=range_method,
                           group_size=group_size)).double()
    val = torch.dot(d.reshape(-1), d.reshape(-1)).item() / d.numel()
    if not math.isfinite(val):
        raise ValueError("the quantization error of w is not finite")
    return val
