"""``LearnedStepFakeQuant`` (the BRECQ loop's activation fake-quant with a learned step) against
PyTorch's fused learnable kernel: the same values bit for bit, the same input gradient, the same
step gradient up to float32 summation order."""
from __future__ import annotations

import pytest
import torch

from mixquant_lite.recon.act_quant import ActQuantizer, LearnedStepFakeQuant


@pytest.mark.parametrize("zp,qmax", [(0.0, 15), (7.0, 15), (3.0, 255), (0.0, 3)])
def test_matches_torch_learnable_kernel(zp, qmax):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 8, 9, 9, generator=gen) * 3).requires_grad_(True)
    g = torch.randn(x.shape, generator=gen)
    z = torch.tensor(zp)
    outs, grads = [], []
    for fn in ("ours", "torch"):
        s = torch.tensor(0.37, requires_grad=True)
        if fn == "ours":
            y = LearnedStepFakeQuant.apply(x, s, z, qmax)
        else:
            y = torch._fake_quantize_learnable_per_tensor_affine(
                x, s.reshape(1), z.reshape(1), 0, qmax, 1.0)
        outs.append(y.detach())
        grads.append(torch.autograd.grad(y, [x, s], g))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])  # straight-through mask, inclusive grid
    assert torch.allclose(grads[0][1].reshape(()), grads[1][1].reshape(()), rtol=1e-4, atol=1e-4)


def test_act_quantizer_same_values_learning_and_inference():
    q = ActQuantizer(4)
    x = torch.randn(2, 3, 5, 5).relu() * 2
    with torch.no_grad():
        q(x)  # initialise
        ref = q(x)  # inference: the fused kernel
    y = q(x)  # learning: LearnedStepFakeQuant
    assert y.requires_grad
    assert torch.equal(y.detach(), ref)
    y.sum().backward()
    assert q.delta.grad is not None and torch.isfinite(q.delta.grad)
