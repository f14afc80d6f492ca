"""Which layers are quantized and which modules are reconstructed as one block: one registry.

- Quantizable layers: every :class:`~torch.nn.Conv2d` and :class:`~torch.nn.Linear`
  (:data:`QUANTIZABLE_TYPES`), named by module path, in module order (``model.named_modules()``).
  The QE table, plans, BRECQ and export all list layers with :func:`quantizable_layers`.
- First and last layer: the first and the last quantizable layer **in module order**
  (:func:`first_last_layers`), the one meaning used by the CLI, :func:`mixquant_lite.brecq` and
  ``reproduce`` (for a ResNet the stem ``conv1`` and the classifier ``fc``; for MobileNetV2
  ``features.0.0`` and ``classifier.1``).
- Blocks: module types BRECQ reconstructs as one unit (its output must match the full-precision
  block's output). Registered here with :func:`register_block`, each with the names of the layers
  whose input is an intermediate activation of the block (quantized when activations are; the
  block's own input is quantized on the block). torchvision's ``BasicBlock``, ``Bottleneck`` and
  MobileNetV2's ``InvertedResidual`` are registered; register your own like BRECQ's ``specials``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = [
    "QUANTIZABLE_TYPES",
    "BlockSpec",
    "register_block",
    "block_spec",
    "block_types",
    "quantizable_layers",
    "quantizable_layer_names",
    "first_last_layers",
    "weight_of",
]

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(module path, module)]`` of every ``Conv2d`` and ``Linear`` in ``model``, in module
    order (``model.named_modules()``; a module reachable twice is listed once). May be empty.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)]


def quantizable_layer_names(model: nn.Module) -> list[str]:
    """Module paths of :func:`quantizable_layers`."""
    return [n for n, _ in quantizable_layers(model)]


def weight_of(module: nn.Module, name: str = "") -> torch.Tensor:
    """The ``weight`` tensor of ``module`` (or of its sub-module at path ``name``).

    Raises:
        TypeError: the module has no weight tensor.
    """
    m = module.get_submodule(name) if name else module
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"module {name or type(m).__name__!r} has no weight tensor")
    return w


def first_last_layers(model_or_names: nn.Module | Sequence[str]) -> tuple[str, str]:
    """``(first, last)`` quantizable layer in module order (of a model, or of a list of layer
    names in module order such as ``QETable.layers``).

    Raises:
        ValueError: no quantizable layer.
    """
    if isinstance(model_or_names, nn.Module):
        names = quantizable_layer_names(model_or_names)
    else:
        names = list(model_or_names)
    if not names:
        raise ValueError("the model has no Conv2d or Linear layer")
    return names[0], names[-1]


@dataclass(frozen=True)
class BlockSpec:
    """A block type reconstructed as one unit.

    Attributes:
        type: the ``nn.Module`` subclass (instances of subclasses match too).
        mid_inputs: given a block instance, the relative names of its quantizable layers whose
            input is an intermediate activation of the block (not the block's input).
    """

    type: type[nn.Module]
    mid_inputs: Callable[[nn.Module], tuple[str, ...]]


_BLOCKS: dict[type[nn.Module], BlockSpec] = {}


def register_block(
    block_type: type[nn.Module],
    mid_inputs: Sequence[str] | Callable[[nn.Module], Sequence[str]] = (),
) -> BlockSpec:
    """Reconstruct modules of ``block_type`` as one unit in BRECQ.

    Args:
        block_type: an ``nn.Module`` subclass.
        mid_inputs: the relative names of the block's layers fed by an intermediate activation
            (e.g. ``("conv2",)`` for a ``BasicBlock``), or a function of the block instance
            returning them (for blocks whose layout depends on their arguments).

    Returns the :class:`BlockSpec` (registering a type again replaces its spec).

    Raises:
        TypeError: ``block_type`` is not an ``nn.Module`` subclass.
    """
    if not (isinstance(block_type, type) and issubclass(block_type, nn.Module)):
        raise TypeError(f"block_type must be an nn.Module subclass, got {block_type!r}")
    if callable(mid_inputs):
        fn = mid_inputs

        def names(block: nn.Module) -> tuple[str, ...]:
            return tuple(fn(block))
    else:
        fixed = tuple(mid_inputs)

        def names(block: nn.Module) -> tuple[str, ...]:
            return fixed
    spec = BlockSpec(block_type, names)
    _BLOCKS[block_type] = spec
    return spec


def block_spec(module: nn.Module) -> BlockSpec | None:
    """The spec of the most specific registered type ``module`` is an instance of, or ``None``."""
    for cls in type(module).__mro__:
        if cls in _BLOCKS:
            return _BLOCKS[cls]
    return None


def block_types() -> tuple[type[nn.Module], ...]:
    """The registered block types."""
    return tuple(_BLOCKS)


def _inverted_residual_mid_inputs(block: nn.Module) -> tuple[str, ...]:
    """Every quantizable layer of a MobileNetV2 block but the first (expansion or depthwise
    convolution): each is fed by the previous layer's ReLU6 output."""
    names = [n for n, _ in quantizable_layers(block)]
    return tuple(names[1:])


register_block(BasicBlock, ("conv2",))
register_block(Bottleneck, ("conv2", "conv3"))
register_block(InvertedResidual, _inverted_residual_mid_inputs)
