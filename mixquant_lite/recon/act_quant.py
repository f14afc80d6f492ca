"""Activation quantizer with a learned step size (asymmetric, per tensor).

``x_hat = fake_quantize_affine(x, s, z, b)`` (:mod:`mixquant_lite.quant`): while the step ``s`` is
learned (BRECQ: Adam, lr 4e-4, cosine-annealed) ``round`` is straight-through, so
``d x_hat / d s`` is LSQ's; in inference it is PyTorch's fused kernel, with the same values.
The zero point ``z`` is fixed at initialisation.

Initialisation happens on the first tensor the quantizer sees (the calling code passes a batch of
calibration activations first): :func:`mixquant_lite.quant.choose_qparams` with
``range_method="mse"``, the same range search as BRECQ's weights and activations.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import MIN_SCALE, check_bits, choose_qparams, fake_quantize_affine

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
        s = self.delta.abs().clamp(min=MIN_SCALE)  # a step driven through zero must not flip
        return fake_quantize_affine(x, s, self.zero_point, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: pass the first input through ``module.input_quantizer``.

    A module-level function (not a closure) so quantized models deep-copy and pickle.
    """
    quantizer: nn.Module = module.get_submodule("input_quantizer")
    return (quantizer(args[0]), *args[1:])
