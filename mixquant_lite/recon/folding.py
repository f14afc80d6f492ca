"""Fold BatchNorm into the preceding convolution (inference form).

For a convolution ``y = W * x + b`` followed by BatchNorm in eval mode
``z = gamma * (y - mean) / sqrt(var + eps) + beta``, the folded convolution is

    W' = W * k[:, None, None, None],   b' = (b - mean) * k + beta,   k = gamma / sqrt(var + eps)

(``k`` has one entry per output channel). The BatchNorm is replaced by :class:`~torch.nn.Identity`,
so the module names of the convolutions do not change (``layer1.0.conv1`` stays
``layer1.0.conv1``) and a QE table or bit-width plan computed on the folded model refers to the
same layer names, but to the **folded** weights ``W'``. Quantizing ``W'`` is what a deployed
integer model does; the BRECQ adaptor therefore quantizes folded weights, and a plan meant for it
should be computed with ``qe_table(fold_bn(model))``.

Pairs recognised (torchvision naming, which :func:`mixquant_lite.zoo.models.resnet20` keeps):

- a ``ConvNd`` attribute ``convX`` and a BatchNorm attribute ``bnX`` of the same parent
  (``conv1``/``bn1`` of the stem, ``conv1..3``/``bn1..3`` inside ``BasicBlock``/``Bottleneck``);
- consecutive ``Conv2d``, ``BatchNorm2d`` children of an ``nn.Sequential`` (``downsample[0]`` /
  ``downsample[1]``, or any plain sequential model).

Folding is only correct when the forward pass applies the BatchNorm directly to the convolution's
output, which holds for these layouts; :func:`check_folding` compares outputs to catch other ones.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = ["fold_bn", "fold_conv_bn", "check_folding"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def fold_conv_bn(conv: _ConvNd, bn: _BatchNorm) -> _ConvNd:
    """Return a new convolution equal to ``bn(conv(x))`` for a BatchNorm in eval mode.

    The arithmetic is done in float64 and cast back to the convolution's dtype.
    """
    if conv.out_channels != bn.num_features:
        raise ValueError(
            f"cannot fold a BatchNorm over {bn.num_features} features into a convolution with "
            f"{conv.out_channels} output channels"
        )
    w = conv.weight.detach().double()
    dev, dtype = conv.weight.device, conv.weight.dtype
    ones = torch.ones(bn.num_features, dtype=torch.float64, device=dev)
    zeros = torch.zeros(bn.num_features, dtype=torch.float64, device=dev)
    gamma = bn.weight.detach().double() if bn.weight is not None else ones
    beta = bn.bias.detach().double() if bn.bias is not None else zeros
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    k = gamma / torch.sqrt(var + bn.eps)
    b = conv.bias.detach().double() if conv.bias is not None else zeros
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter((w * k.view(-1, *[1] * (w.dim() - 1))).to(dtype))
    folded.bias = nn.Parameter(((b - mean) * k + beta).to(dtype))
    return folded


def _bn_name(conv_name: str) -> str | None:
    """``conv1`` -> ``bn1``, ``conv`` -> ``bn``; other names have no partner."""
    return "bn" + conv_name[4:] if conv_name.startswith("conv") else None


def _fold_children(parent: nn.Module) -> int:
    """Fold the recognised pairs among ``parent``'s direct children in place; return their count."""
    n = 0
    children = dict(parent.named_children())
    # Attribute pairs convX / bnX.
    for name, child in children.items():
        bn_name = _bn_name(name)
        bn = children.get(bn_name) if bn_name else None
        if bn_name is not None and isinstance(child, _ConvNd) and isinstance(bn, _BatchNorm):
            setattr(parent, name, fold_conv_bn(child, bn))
            setattr(parent, bn_name, nn.Identity())
            n += 1
    # Consecutive (conv, bn) inside a Sequential.
    if isinstance(parent, nn.Sequential):
        keys = list(parent._modules)
        for a, b in zip(keys[:-1], keys[1:], strict=True):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, _CONV) and isinstance(bn, _BN):
                parent._modules[a] = fold_conv_bn(conv, bn)
                parent._modules[b] = nn.Identity()
                n += 1
    return n


def fold_bn(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in ``eval()`` mode with every recognised conv+BN pair folded.

    The caller's model is not modified. Unpaired BatchNorms (none in torchvision ResNets) stay as
    they are. See the module docstring for the pairs recognised.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        _fold_children(module)
    return folded


@torch.no_grad()
def check_folding(
    original: nn.Module, folded: nn.Module, x: torch.Tensor, *, rtol: float = 1e-3
) -> float:
    """Relative max error between ``original(x)`` and ``folded(x)``, both in eval mode.

    Raises:
        ValueError: the error exceeds ``rtol`` (the forward pass does not apply each BatchNorm
            directly after the convolution it was paired with).
    """
    was = original.training
    original.eval()
    try:
        ref = original(x).float()
    finally:
        original.train(was)
    out = folded.eval()(x).float()
    err = ((ref - out).abs().max() / ref.abs().max().clamp(min=1e-12)).item()
    if not err <= rtol:
        raise ValueError(
            f"BatchNorm folding changed the model's output (relative error {err:.2e} > {rtol:g}); "
            "the model does not apply each BatchNorm directly after the convolution it was paired "
            "with by name. Pass fold_batchnorm=False to quantize the unfolded weights."
        )
    return err
