"""The asymmetric (affine) uniform quantizer of ``shared/docs/mixquant-spec.md``.

For a weight tensor ``W`` and bit-width ``b`` (levels ``0 .. 2^b - 1``), spec "Asymmetric
(affine) uniform quantizer":

- range ``lo = min(W.min(), 0)``, ``hi = max(W.max(), 0)`` ("minmax"),
- step ``s = (hi - lo) / (2^b - 1)``, zero point ``z = clamp(round(-lo / s), 0, 2^b - 1)``,
- ``q = clamp(round(W / s) + z, 0, 2^b - 1)`` and ``W_hat = (q - z) * s``.

The round trip is done by PyTorch's fused kernels (``torch.fake_quantize_per_tensor_affine`` /
``torch.fake_quantize_per_channel_affine``), so results agree with them exactly. Per channel
means per output channel (axis 0), one ``(s, z)`` per channel. ``round`` is round-half-to-even
(the kernels' ``nearbyint``); the kernels divide by multiplying with ``1/s`` taken in float32.

Weights in fp16/bf16 are quantized in float32 and cast back; QE is accumulated in float64.
Only ``range_method="minmax"`` is implemented (the spec's optional "mse" search is not).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["quantize", "qe", "qparams", "check_bits", "check_bit_list", "RANGE_METHODS"]

RANGE_METHODS = ("minmax",)
MIN_BITS, MAX_BITS = 1, 16
# A step smaller than this would make 1/s overflow in float32; an all-zero (or subnormal-range)
# tensor gets this step instead and round-trips exactly.
_MIN_SCALE = 2.0**-100


def check_bits(bits, name: str = "bits") -> int:
    """Return ``bits`` as an int after checking it is an integer in ``1..16``.

    Raises:
        TypeError: not an integer (bools and floats are refused, numpy integers accepted).
        ValueError: outside ``1..16``.
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    bits = int(bits)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{name} must be an int in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return bits


def check_bit_list(bits: Iterable[int], name: str = "bits") -> tuple[int, ...]:
    """Candidate bit-widths as a sorted tuple of ints, each checked by :func:`check_bits`.

    Raises:
        TypeError: ``bits`` is not an iterable of ints (a bare int is refused too).
        ValueError: empty, duplicated, or an entry outside ``1..16``.
    """
    if isinstance(bits, (str, bytes)) or not isinstance(bits, Iterable):
        raise TypeError(f"{name} must be a list of ints in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    out = [check_bits(b, name) for b in bits]
    if not out:
        raise ValueError(f"{name} must not be empty")
    dup = sorted({b for b in out if out.count(b) > 1})
    if dup:
        raise ValueError(f"{name} has duplicated bit-widths {dup}")
    return tuple(sorted(out))


def _check_range_method(range_method: str) -> None:
    if range_method not in RANGE_METHODS:
        raise ValueError(f"range_method must be one of {RANGE_METHODS}, got {range_method!r}")


def _check_weight(w: torch.Tensor, name: str = "w", *, per_channel: bool = False) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {w.dtype}")
    if w.numel() == 0:
        raise ValueError(f"{name} is empty")
    if per_channel and w.dim() < 1:
        raise ValueError(f"per_channel=True needs {name} with at least one dimension")
    return w


def _minmax(w: torch.Tensor, per_channel: bool, name: str = "w") -> tuple[np.ndarray, np.ndarray]:
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
    mn = mn.float().reshape(-1).cpu().numpy()
    mx = mx.float().reshape(-1).cpu().numpy()
    if not (np.isfinite(mn).all() and np.isfinite(mx).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return mn, mx


def _grid(
    mn: np.ndarray, mx: np.ndarray, bits: tuple[int, ...], name: str = "w"
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and zero points for every bit-width in ``bits`` from the min/max of ``_minmax``.

    Returns ``(scale, zero_point)``: float32 and int64 arrays of shape ``(len(bits), C)``.
    The range arithmetic runs in float64 so that ``hi - lo`` of two large float32 values does
    not overflow; the step is then rounded to float32, as the fused kernels take it.
    """
    lo = np.minimum(mn.astype(np.float64), 0.0)
    hi = np.maximum(mx.astype(np.float64), 0.0)
    qmax = (2.0 ** np.asarray(bits, dtype=np.float64) - 1.0)[:, None]
    scale64 = np.maximum((hi - lo)[None, :] / qmax, _MIN_SCALE)
    with np.errstate(over="ignore"):
        scale = scale64.astype(np.float32)
    if not np.isfinite(scale).all():
        raise ValueError(f"{name}'s range is too large for a float32 quantization step")
    zp = np.clip(np.rint(-lo[None, :] / scale.astype(np.float64)), 0.0, qmax).astype(np.int64)
    return scale, zp


def qparams(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "minmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ``w`` at ``bits`` (spec: "Asymmetric (affine) uniform quantizer").

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors of shape ``()`` per tensor, or
        ``(C_out,)`` per channel, on ``w``'s device. ``scale`` is in the units of ``w``.

    Raises:
        TypeError / ValueError: bad ``bits``, unknown ``range_method``, a non-float, empty or
        non-finite ``w``.
    """
    bits = check_bits(bits)
    _check_range_method(range_method)
    _check_weight(w, per_channel=per_channel)
    scale, zp = _grid(*_minmax(w, per_channel), (bits,))
    scale_t = torch.from_numpy(scale[0]).to(w.device)
    zp_t = torch.from_numpy(zp[0].astype(np.int32)).to(w.device)
    if not per_channel:
        scale_t, zp_t = scale_t[0], zp_t[0]
    return scale_t, zp_t


def quantize(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "minmax"
) -> torch.Tensor:
    """Quantize-dequantize ``w`` at ``bits`` (simulated quantization, spec "Setting").

    Returns ``W_hat``: a tensor of the same shape, dtype and device as ``w``, computed in
    float32 by the fused ``torch.fake_quantize_per_{tensor,channel}_affine`` kernels.
    """
    scale, zp = qparams(w, bits, per_channel=per_channel, range_method=range_method)
    x = w.detach().float()
    qmax = 2**bits - 1
    if per_channel:
        out = torch.fake_quantize_per_channel_affine(x, scale, zp, 0, 0, qmax)
    else:
        out = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp.item()), 0, qmax)
    return out.to(w.dtype)


def qe(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "minmax"
) -> float:
    """Quantization error ``QE(W, b) = mean((W - W_hat)^2)`` (spec: "Quantization error").

    ``W`` is measured in float32 (fp16/bf16 are upcast exactly), ``W_hat`` is
    :func:`quantize`'s float32 result, and the squared differences are summed in float64.
    Returns a Python float in the units of ``w`` squared (0.0 for a constant tensor).
    """
    x = w.detach().float()
    d = (x - quantize(x, bits, per_channel=per_channel, range_method=range_method)).double()
    val = torch.dot(d.reshape(-1), d.reshape(-1)).item() / d.numel()
    assert math.isfinite(val)
    return val
