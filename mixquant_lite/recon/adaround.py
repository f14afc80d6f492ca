"""AdaRound (Nagel et al., 2020) on top of the asymmetric quantizer of ``mixquant-spec.md``.

Round-to-nearest picks, for every weight, the closer of the two grid points ``floor(W/s)`` and
``floor(W/s) + 1``. AdaRound learns that choice instead: a continuous variable ``V`` per weight
gives the soft rounding ``h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (the
"rectified sigmoid", ``gamma = -0.1``, ``zeta = 1.1``), and

    W_soft = (clamp(floor(W/s) + h(V) + z, 0, 2^b - 1) - z) * s

is trained to reproduce a layer's (or a block's) full-precision output. The regulariser
``sum(1 - |2 h(V) - 1|^beta)`` pushes every ``h`` to 0 or 1 as ``beta`` is annealed; at the end
the hard choice ``h = [V >= 0]`` puts every weight exactly on the ``b``-bit grid of step ``s`` and
zero point ``z``: at most ``2^b`` distinct values per quantization group (tensor or output channel).

The step and zero point are fixed before the rounding is learned. ``range_method="minmax"`` uses
:func:`mixquant_lite.quant.qparams` unchanged (the range of the QE table); ``"mse"`` (the BRECQ
recipe's weight initialisation) shrinks the range by the factor in ``1.00, 0.99, ..., 0.21`` that
minimises ``sum |W - W_hat|^2.4`` with round-to-nearest, per group (measured on at most 65,536
evenly strided values of a group).
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import check_bits, qparams

__all__ = ["AdaRoundQuantizer", "weight_qparams", "GAMMA", "ZETA", "RANGE_METHODS"]

GAMMA, ZETA = -0.1, 1.1
RANGE_METHODS = ("mse", "minmax")
_MSE_RATIOS = [1.0 - 0.01 * i for i in range(80)]
_MSE_P = 2.4
_MSE_MAX_ELEMENTS = 1 << 16
_MSE_CHUNK = 1 << 22


def _group_view(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reshape a per-group tensor ``(C_out,)`` (or a scalar) to broadcast against ``w``."""
    return t.reshape(-1, *[1] * (w.dim() - 1)) if t.dim() == 1 else t


def _rtn(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest fake quantization with broadcastable ``scale`` and ``zp``."""
    return (torch.clamp(torch.round(w / scale) + zp, 0, qmax) - zp) * scale


@torch.no_grad()
def weight_qparams(
    w: torch.Tensor, bits: int, *, per_channel: bool = False, range_method: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step and zero point for ``w`` at ``bits``: float32 ``scale`` and integer-valued float32
    ``zero_point``, shaped ``()`` per tensor or ``(C_out,)`` per output channel.

    ``"minmax"`` is exactly :func:`mixquant_lite.quant.qparams`; ``"mse"`` applies it to ``w``
    clipped to ``[r * lo, r * hi]`` for the ratio ``r`` with the smallest ``L_2.4`` error.
    """
    bits = check_bits(bits)
    if range_method not in RANGE_METHODS:
        raise ValueError(f"range_method must be one of {RANGE_METHODS}, got {range_method!r}")
    w = w.detach().float()
    scale, zp = qparams(w, bits, per_channel=per_channel)
    if range_method == "minmax":
        return scale, zp.float()
    qmax = 2**bits - 1
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        lo, hi = flat.amin(1).clamp(max=0), flat.amax(1).clamp(min=0)
    else:
        flat = w.reshape(1, -1)
        lo, hi = w.amin().clamp(max=0).reshape(1), w.amax().clamp(min=0).reshape(1)
    # The error is measured on an evenly strided subset of at most _MSE_MAX_ELEMENTS values per
    # group (the range itself always comes from the whole group): bounded cost for big layers.
    if flat.shape[1] > _MSE_MAX_ELEMENTS:
        flat = flat[:, :: flat.shape[1] // _MSE_MAX_ELEMENTS + 1]
    ratios = torch.tensor(_MSE_RATIOS, device=w.device)
    errs, scales, zps = [], [], []
    step = max(1, _MSE_CHUNK // flat.numel())  # ratios evaluated together, bounded memory
    for r in ratios.split(step):
        # Same formulas as qparams (spec): s = (hi - lo) / qmax, z = clamp(round(-lo / s)).
        s = ((hi - lo)[None, :] * r[:, None] / qmax).clamp(min=2.0**-100)  # (R, G)
        z = torch.clamp(torch.round(-lo[None, :] * r[:, None] / s), 0, qmax)
        wq = _rtn(flat[None], s[..., None], z[..., None], qmax)  # (R, G, E)
        errs.append((flat[None] - wq).abs().pow(_MSE_P).sum(2))
        scales.append(s)
        zps.append(z)
    best = torch.cat(errs).argmin(0, keepdim=True)  # first (widest) range among ties
    best_s = torch.cat(scales).gather(0, best)[0]
    best_z = torch.cat(zps).gather(0, best)[0]
    if not per_channel:
        return best_s.reshape(()), best_z.reshape(())
    return best_s, best_z


class AdaRoundQuantizer(nn.Module):
    """Learned rounding for one weight tensor ``(C_out, ...)`` at ``bits``.

    Call the module to get the (soft or hard) dequantized weight, same shape as the original.
    The original weight is not kept: ``floor(W / s)`` and the rounding variable ``alpha`` (``V``)
    determine it.

    Attributes:
        alpha: learnable ``V``, initialised so that ``h(V)`` equals the fractional part of
            ``W / s`` (the soft weight starts equal to the clipped original).
        scale, zero_point: buffers broadcastable against the weight.
        soft: ``True`` while learning; :meth:`harden` switches to hard rounding for good.
    """

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
        scale, zp = weight_qparams(w, self.bits, per_channel=per_channel, range_method=range_method)
        self.register_buffer("scale", _group_view(scale, w).clone())
        self.register_buffer("zero_point", _group_view(zp, w).clone())
        x = w / self.scale
        floor = torch.floor(x)
        self.register_buffer("w_floor", floor)
        rest = (x - floor).clamp(1e-6, 1 - 1e-6)  # keeps the logit finite
        # Round-to-nearest's choice, kept for the "before" baseline and the fallback.
        self.register_buffer("nearest_up", (x - floor >= 0.5).float())
        # Solve h(alpha) = rest for alpha: sigmoid(alpha) = (rest - gamma) / (zeta - gamma).
        self.alpha = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.soft = True
        self.out_dtype = weight.dtype

    def h(self) -> torch.Tensor:
        """Soft rounding in ``[0, 1]`` (rectified sigmoid), same shape as the weight."""
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def _dequant(self, up: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(self.w_floor + up + self.zero_point, 0, self.qmax)
        return ((q - self.zero_point) * self.scale).to(self.out_dtype)

    def forward(self) -> torch.Tensor:
        """Dequantized weight: soft while learning, on the ``b``-bit grid after :meth:`harden`."""
        return self._dequant(self.h() if self.soft else (self.alpha >= 0).float())

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

    def rounding_reg(self, beta: float) -> torch.Tensor:
        """``sum(1 - |2 h - 1|^beta)``: zero when every ``h`` is 0 or 1 (scalar tensor)."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    @torch.no_grad()
    def integer(self) -> torch.Tensor:
        """The integer codes ``q`` in ``0 .. 2^b - 1`` of the current hard choice (int64)."""
        q = self.w_floor + (self.alpha >= 0).float() + self.zero_point
        return torch.clamp(q, 0, self.qmax).long()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, soft={self.soft}"
