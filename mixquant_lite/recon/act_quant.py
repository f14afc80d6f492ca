"""Activation quantizer with a learned step size (asymmetric, per tensor).

``x_hat = (clamp(round(x * (1/s)) + z, 0, 2^b - 1) - z) * s`` (float32, round half to even),
the values of PyTorch's fused kernel in both modes. In inference (no gradient for ``s``) it is
that kernel (:func:`mixquant_lite.quant.fake_quantize_affine`). While the step ``s`` is learned
(BRECQ: Adam, lr 4e-4, cosine-annealed) it is :class:`LearnedStepFakeQuant`:
``d x_hat / d x`` is straight-through inside the grid (codes ``0 .. 2^b - 1`` inclusive, zero
outside) and ``d x_hat / d s`` is LSQ's, ``round(x/s) - x/s`` inside and ``-z`` or
``2^b - 1 - z`` outside -- the gradients of ``torch._fake_quantize_learnable_per_tensor_affine``,
in five vectorised passes forward and three backward (that fused kernel is scalar code and, on
CPU, slower than this; measured in ``benchmarks/results/brecq_profile.md``). (Earlier versions
spelled the formula with a straight-through ``round`` in plain ops, ten passes forward and
backward each; their float32 rounding put some values whose code is exactly ``0`` or
``2^b - 1`` outside the grid in the backward pass.) The zero point ``z`` is fixed at
initialisation.

Initialisation happens on the first tensor the quantizer sees (the calling code passes a batch of
calibration activations first): :func:`mixquant_lite.quant.choose_qparams` with
``range_method="mse"``, the same range search as BRECQ's weights and activations.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import MIN_SCALE, check_bits, choose_qparams, fake_quantize_affine

__all__ = ["ActQuantizer", "LearnedStepFakeQuant", "round_ste", "quantize_input_hook"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


class LearnedStepFakeQuant(torch.autograd.Function):
    """``x_hat`` with LSQ's gradient for the step (see the module docstring).

    ``apply(x, s, z, qmax)``: ``x`` float32 (any shape), ``s`` a positive float32 scalar tensor
    (the step, may require grad), ``z`` the integer-valued zero point (float scalar tensor),
    ``qmax = 2^b - 1``. Returns ``x_hat``, same shape as ``x``.
    """

    @staticmethod
    def forward(ctx, x, s, z, qmax):
        inv_t = 1.0 / s  # float32, as the fused kernels form it
        # Python scalars on the CPU: broadcasting a 0-dim tensor there is several times slower.
        cpu = x.device.type == "cpu"
        inv = float(inv_t) if cpu else inv_t
        step = float(s) if cpu else s
        lo, hi = (-float(z), qmax - float(z)) if cpu else (-z, qmax - z)
        r = torch.mul(x, inv).round_()  # half to even
        q = torch.clamp(r, lo, hi)  # code - z: exactly clamp(r + z, 0, qmax) - z
        inside = torch.eq(q, r, out=r)  # float 1/0: code inside 0 .. qmax (inclusive); a
        # float output is written vectorised, a bool one is several times slower
        out = q.mul_(step)
        ctx.save_for_backward(x, inv_t, inside, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, inv, inside, out = ctx.saved_tensors
        grad = grad.contiguous()
        dx = grad * inside
        # sum(g * (q - [inside] * x/s)) = (g . x_hat - dx . x) / s: two dot products, no temporary
        ds = None
        if ctx.needs_input_grad[1]:
            ds = (torch.dot(grad.reshape(-1), out.reshape(-1))
                  - torch.dot(dx.reshape(-1), x.reshape(-1))) * inv
        return (dx if ctx.needs_input_grad[0] else None), ds, None, None


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
        if self.delta.requires_grad and torch.is_grad_enabled():
            out = LearnedStepFakeQuant.apply(x.float(), s, self.zero_point, self.qmax)
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
