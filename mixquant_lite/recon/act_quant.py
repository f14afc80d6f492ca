"""Activation quantizer with a learned step size (asymmetric, per tensor).

``x_hat = (clamp(round(x / s) + z, 0, 2^b - 1) - z) * s`` with a straight-through estimator for
``round`` (its gradient is taken as 1), so the step ``s`` can be learned by gradient descent (BRECQ
learns it with Adam, lr 4e-4, cosine-annealed). The zero point ``z`` is fixed at initialisation.

Initialisation happens on the first tensor the quantizer sees (the calling code passes a batch of
calibration activations first): the range ``[lo, hi] = [min(x.min(), 0), max(x.max(), 0)]`` is
shrunk by the factor ``r`` in ``1.00, 0.99, ..., 0.01`` that minimises the mean squared error of
the round trip on that tensor (for large tensors on a fixed, evenly strided subset of 2^20 values).
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import check_bits

__all__ = ["ActQuantizer", "round_ste", "quantize_input_hook"]

_RATIOS = [1.0 - 0.01 * i for i in range(100)]
_MAX_INIT_ELEMENTS = 1 << 20


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class ActQuantizer(nn.Module):
    """Fake-quantize activations at ``bits`` (same shape and dtype in and out).

    Attributes:
        delta: learnable step ``s`` (scalar parameter), valid once ``initialized`` is true.
        zero_point: fixed integer-valued zero point (float buffer).
        initialized: bool buffer; ``False`` until the first forward call.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "act_bits")
        self.qmax = 2**self.bits - 1
        self.delta = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Set ``delta`` and ``zero_point`` from a representative activation tensor."""
        flat = x.detach().float().reshape(-1)
        if flat.numel() > _MAX_INIT_ELEMENTS:  # deterministic subsample, no RNG involved
            flat = flat[:: flat.numel() // _MAX_INIT_ELEMENTS + 1]
        lo, hi = flat.amin().clamp(max=0), flat.amax().clamp(min=0)
        best = None
        for r in _RATIOS:
            s = ((hi - lo) * r / self.qmax).clamp(min=1e-8)
            z = torch.clamp(torch.round(-lo * r / s), 0, self.qmax)
            xq = (torch.clamp(torch.round(flat / s) + z, 0, self.qmax) - z) * s
            err = (flat - xq).pow(2).mean().item()
            if best is None or err < best[0]:
                best = (err, s, z)
        _, s, z = best
        self.delta.copy_(s)
        self.zero_point.copy_(z)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(x)
        s = self.delta.abs().clamp(min=1e-8)  # a step driven through zero must not flip sign
        q = torch.clamp(round_ste(x / s) + self.zero_point, 0, self.qmax)
        return ((q - self.zero_point) * s).to(x.dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: pass the first input through ``module.input_quantizer``.

    A module-level function (not a closure) so quantized models deep-copy and pickle.
    """
    return (module.input_quantizer(args[0]), *args[1:])
