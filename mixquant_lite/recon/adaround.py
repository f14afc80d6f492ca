"""AdaRound (Nagel et al., 2020) on top of the asymmetric quantizer of
:mod:`mixquant_lite.quant` (``docs/method.md``).

Round-to-nearest picks, for every weight, the closer of the two grid points ``floor(W/s)`` and
``floor(W/s) + 1``. AdaRound learns that choice instead: a continuous variable ``V`` per weight
gives the soft rounding ``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (the
"rectified sigmoid", ``gamma = -0.1``, ``zeta = 1.1``), and

    W_soft = (clamp(floor(W/s) + h(V) + z, 0, 2^b - 1) - z) * s

is trained to reproduce a layer's (or a block's) full-precision output. The regulariser
``sum(1 - |2 h(V) - 1|^beta)`` pushes every ``h`` to 0 or 1 as ``beta`` is annealed; at the end
the hard choice ``h = [V >= 0]`` puts every weight exactly on the ``b``-bit grid of step ``s`` and
zero point ``z``: at most ``2^b`` distinct values per quantization group (tensor or output channel).

The step and zero point are fixed before the rounding is learned, by
:func:`mixquant_lite.quant.choose_qparams` (``"mse"``: BRECQ's range search; ``"minmax"``: the
QE table's range). Round-to-nearest on that grid (:meth:`AdaRoundQuantizer.nearest`) is
:func:`mixquant_lite.quant.fake_quantize_affine` bit for bit: ``floor`` and the nearest choice are
taken from ``W * (1/s)`` in float32, as the fused kernel takes them, and ``round`` is half to even.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import (
    RANGE_METHODS,
    check_bits,
    choose_qparams,
    dequantize_affine,
)

__all__ = ["AdaRoundQuantizer", "GAMMA", "ZETA", "RANGE_METHODS"]

GAMMA, ZETA = -0.1, 1.1


class AdaRoundQuantizer(nn.Module):
    """Learned rounding for one weight tensor ``(C_out, ...)`` at ``bits``.

    Call the module to get the (soft or hard) dequantized weight, same shape as the original.
    The original weight is not kept: ``floor(W / s)`` and the rounding variable ``alpha`` (``V``)
    determine it.

    Attributes:
        alpha: learnable ``V``, initialised so that ``h(V)`` equals the fractional part of
            ``W / s`` (the soft weight starts equal to the clipped original).
        scale, zero_point: the grid from :func:`~mixquant_lite.quant.choose_qparams`, shape
            ``()`` or ``(C_out,)`` (float32, int32).
        soft: ``True`` while learning; :meth:`harden` switches to hard rounding for good.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    w_floor: torch.Tensor
    nearest_up: torch.Tensor
    _scale_b: torch.Tensor
    _zp_b: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        bits: int,
        *,
        per_channel: bool = False,
        range_method: str = "mse",
    ) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.per_channel = per_channel
        self.qmax = 2**self.bits - 1
        w = weight.detach().float()
        granularity = "per_channel" if per_channel else "per_tensor"
        scale, zp = choose_qparams(w, self.bits, granularity, range_method)
        self.register_buffer("scale", scale)  # () or (C_out,), float32
        self.register_buffer("zero_point", zp)  # () or (C_out,), int32
        # W * (1/s) in float32, exactly as the fused kernel forms it before rounding.
        x = w * (1.0 / (scale.reshape(-1, *[1] * (w.dim() - 1)) if per_channel else scale))
        floor = torch.floor(x)
        self.register_buffer("w_floor", floor)
        rest = (x - floor).clamp(1e-6, 1 - 1e-6)  # keeps the logit finite
        # Round-to-nearest's choice (half to even), kept for the "before" baseline and fallback.
        self.register_buffer("nearest_up", torch.round(x) - floor)
        # Solve h(alpha) = rest for alpha: sigmoid(alpha) = (rest - gamma) / (zeta - gamma).
        self.alpha = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.soft = True
        self.out_dtype = weight.dtype
        # The grid broadcast against the weight once, for the per-step soft weight (float32).
        shape = (-1, *[1] * (w.dim() - 1)) if per_channel else ()
        self.register_buffer("_scale_b", scale.float().reshape(shape), persistent=False)
        self.register_buffer("_zp_b", zp.float().reshape(shape), persistent=False)

    def h(self) -> torch.Tensor:
        """Soft rounding in ``[0, 1]`` (rectified sigmoid), same shape as the weight."""
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def _codes(self, up: torch.Tensor) -> torch.Tensor:
        """``clamp(floor(W/s) + up + z, 0, qmax)`` as float (differentiable in ``up``)."""
        z = self.zero_point.float()
        z = z.reshape(-1, *[1] * (self.w_floor.dim() - 1)) if z.dim() == 1 else z
        return torch.clamp(self.w_floor + up + z, 0, self.qmax)

    def _dequant(self, up: torch.Tensor) -> torch.Tensor:
        return dequantize_affine(self._codes(up), self.scale, self.zero_point, self.out_dtype)

    def forward(self) -> torch.Tensor:
        """Dequantized weight: soft while learning, on the ``b``-bit grid after :meth:`harden`."""
        return self._dequant(self.h() if self.soft else (self.alpha >= 0).float())

    def soft_weight(self, h: torch.Tensor) -> torch.Tensor:
        """The soft weight for a given ``h = self.h()`` (the BRECQ loop computes ``h`` once per
        step for this and :meth:`rounding_reg`); equal to ``forward()`` in soft mode, bit for bit,
        with fewer small-tensor ops."""
        codes = torch.clamp(self.w_floor + h + self._zp_b, 0, self.qmax)
        out = (codes - self._zp_b) * self._scale_b
        return out if self.out_dtype == torch.float32 else out.to(self.out_dtype)

    @torch.no_grad()
    def nearest(self) -> torch.Tensor:
        """Round-to-nearest weight on the same grid (the "before" baseline)."""
        return self._dequant(self.nearest_up)

    @torch.no_grad()
    def set_nearest(self) -> None:
        """Make the hard choice equal to round-to-nearest (no iterations, or the fallback)."""
        self.alpha.copy_(self.nearest_up * 2 - 1)

    def harden(self) -> None:
        """Switch to hard rounding ``h = [alpha >= 0]`` for good."""
        self.soft = False

    def rounding_reg(self, beta: float, h: torch.Tensor | None = None) -> torch.Tensor:
        """``sum(1 - |2 h - 1|^beta)``: zero when every ``h`` is 0 or 1 (scalar tensor).
        ``h``: ``self.h()`` when already computed this step."""
        h = self.h() if h is None else h
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    @torch.no_grad()
    def integer(self) -> torch.Tensor:
        """The integer codes ``q`` in ``0 .. 2^b - 1`` of the current hard choice (int64)."""
        return self._codes((self.alpha >= 0).float()).long()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, soft={self.soft}"
