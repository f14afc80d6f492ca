"""Activation quantizer with a learned step size (asymmetric, per tensor).

``x_hat = (clamp(round(x / s) + z, 0, 2^b - 1) - z) * s``, computed by PyTorch's fused kernels
with the same values in both modes. While the step ``s`` is learned (BRECQ: Adam, lr 4e-4,
cosine-annealed) it is ``torch._fake_quantize_learnable_per_tensor_affine`` (one pass forward,
one backward): ``d x_hat / d x`` is straight-through inside the grid (codes ``0 .. 2^b - 1``
inclusive, zero outside) and ``d x_hat / d s`` is LSQ's, ``round(x/s) - x/s`` inside and
``-z`` or ``2^b - 1 - z`` outside. (Earlier versions spelled the same formula with a
straight-through ``round`` in plain ops; its float32 rounding put some values whose code is
exactly ``0`` or ``2^b - 1`` outside the grid in the backward pass; the fused kernel does not.)
In inference (no gradient for ``s``) it is :func:`mixquant_lite.quant.fake_quantize_affine`.
The zero point ``z`` is fixed at initialisation.

Initialisation happens on the first tensor the quantizer sees (the calling code passes a batch of
calibration activations first): :func:`mixquant_lite.quant.choose_qparams` with
``range_method="mse"``, the same range search as BRECQ's weights and activations.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import _MIN_SCALE, check_bits, choose_qparams, fake_quantize_affine

__all__ = ["ActQuantizer", "round_ste", "quantize_input_hook"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class ActQuantizer(nn.Module):
    """Fake-quantize activations at ``bits`` (same shape and dtype in and out).

    Attributes:
        delta: learnable step ``s`` (scalar parameter, activation units), valid once
            ``initialized`` is true.
        zero_point: fixed integer-valued zero point (float buffer).
        initialized: bool buffer; ``False`` until the first forward call.
    """

    zero_point: torch.Tensor
    initialized: torch.Tensor

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
        scale, zp = choose_qparams(x.detach().float(), self.bits, "per_tensor", "mse")
        self.delta.copy_(scale)
        self.zero_point.copy_(zp.float())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(x)
        s = self.delta.abs().clamp(min=_MIN_SCALE)  # a step driven through zero must not flip
        if self.delta.requires_grad and torch.is_grad_enabled():
            out = torch._fake_quantize_learnable_per_tensor_affine(
                x.float(), s.reshape(1), self.zero_point.reshape(1), 0, self.qmax, 1.0
            )
            return out.to(x.dtype)
        return fake_quantize_affine(x, s, self.zero_point, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: pass the first input through ``module.input_quantizer``.

    A module-level function (not a closure) so quantized models deep-copy and pickle.
    """
    quantizer: nn.Module = module.get_submodule("input_quantizer")
    return (quantizer(args[0]), *args[1:])
