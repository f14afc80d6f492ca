"""Which layers are quantized and which modules are reconstructed as one block: one registry.

- Quantizable layers: modules of a registered type (:func:`register_layer`), each with the name
  of its weight parameter, named by module path, in module order (``model.named_modules()``).
  The QE table, plans, BRECQ and the sensitivity measures list layers with
  :func:`quantizable_layers` and read the weight with :func:`weight_of`. Registered by default:
  ``Conv2d`` and ``Linear`` (:data:`QUANTIZABLE_TYPES`, subclasses included, so
  ``nn.MultiheadAttention``'s ``out_proj`` too); ``nn.MultiheadAttention``'s ``in_proj_weight``
  as **one** layer (q, k and v stacked, ``(3 E, E)``: one Parameter and one matmul in PyTorch;
  with per-channel grids its rows get exactly the grids that q, k and v would get apart, only the
  bit-width is shared; an MHA built with ``kdim``/``vdim`` different from ``embed_dim`` has no
  ``in_proj_weight`` and is not listed); Hugging Face's ``Conv1D`` (GPT-2 style, weight stored
  transposed ``(in, out)``: ``LayerSpec.out_axis`` is 1; the package's per-channel grids run over
  axis 0 of the stored tensor, so quantize such models per tensor or convert them with
  :func:`conv1d_to_linear` first). ``nn.Embedding`` is an option: ``register_layer(nn.Embedding)``
  (one grid per token row when per channel).
- First and last layer: the first and the last quantizable layer **in module order**
  (:func:`first_last_layers`), the one meaning used by the CLI, :func:`mixquant_lite.brecq` and
  ``reproduce`` (for a ResNet the stem ``conv1`` and the classifier ``fc``; for MobileNetV2
  ``features.0.0`` and ``classifier.1``).
- Blocks: module types BRECQ reconstructs as one unit (its output must match the full-precision
  block's output). Registered here with :func:`register_block`, each with the names of the layers
  whose input is an intermediate activation of the block (quantized when activations are; the
  block's own input is quantized on the block). torchvision's ``BasicBlock``, ``Bottleneck`` and
  MobileNetV2's ``InvertedResidual`` are registered, and transformer blocks: torchvision ViT's
  ``EncoderBlock``, Hugging Face's ``BertLayer`` and ``GPT2Block`` (by qualified name, without
  importing transformers); register your own like BRECQ's ``specials``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vision_transformer import EncoderBlock

__all__ = [
    "QUANTIZABLE_TYPES",
    "LayerSpec",
    "register_layer",
    "unregister_layer",
    "layer_spec",
    "is_quantizable",
    "weight_name",
    "conv1d_to_linear",
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


@dataclass(frozen=True)
class LayerSpec:
    """A quantizable module type.

    Attributes:
        type: an ``nn.Module`` subclass, or its qualified name ``"package.module.Class"``
            (matched on the module's class and its bases without importing the package).
        param: the name of the weight Parameter on the module (``"weight"``, ``"in_proj_weight"``).
        out_axis: the axis of the weight holding output channels (0, or 1 for HF ``Conv1D``).
    """

    type: type[nn.Module] | str
    param: str = "weight"
    out_axis: int = 0


_LAYERS: dict[type[nn.Module] | str, LayerSpec] = {}


def register_layer(layer_type: type[nn.Module] | str, param: str = "weight",
                   out_axis: int = 0) -> LayerSpec:
    """Quantize modules of ``layer_type`` (subclasses included): their Parameter ``param``.

    ``layer_type`` may be a qualified class name such as ``"transformers.pytorch_utils.Conv1D"``
    so that optional libraries are not imported. Registering a type again replaces its spec.

    Raises:
        TypeError: ``layer_type`` is neither an ``nn.Module`` subclass nor a string.
        ValueError: ``out_axis`` is not 0 or 1.
    """
    if not (isinstance(layer_type, str)
            or (isinstance(layer_type, type) and issubclass(layer_type, nn.Module))):
        raise TypeError(f"layer_type must be an nn.Module subclass or a qualified class name, "
                        f"got {layer_type!r}")
    if out_axis not in (0, 1):
        raise ValueError(f"out_axis must be 0 or 1, got {out_axis!r}")
    spec = LayerSpec(layer_type, param, out_axis)
    _LAYERS[layer_type] = spec
    return spec


def unregister_layer(layer_type: type[nn.Module] | str) -> None:
    """Stop quantizing ``layer_type`` (a no-op if it was not registered)."""
    _LAYERS.pop(layer_type, None)


def layer_spec(module: nn.Module) -> LayerSpec | None:
    """The spec of ``module``'s most specific registered class, or ``None`` when it is not
    quantizable (or its registered Parameter is absent, e.g. an MHA with separate q/k/v dims)."""
    for cls in type(module).__mro__:
        spec = _LAYERS.get(cls) or _LAYERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if spec is not None:
            return spec if isinstance(getattr(module, spec.param, None), torch.Tensor) else None
    return None


def is_quantizable(module: nn.Module) -> bool:
    """Whether ``module`` is of a registered quantizable type (see :func:`register_layer`)."""
    return layer_spec(module) is not None


def weight_name(module: nn.Module) -> str:
    """The name of ``module``'s quantized Parameter (``"weight"``, ``"in_proj_weight"``).

    Raises:
        TypeError: ``module`` is not quantizable.
    """
    spec = layer_spec(module)
    if spec is None:
        raise TypeError(f"{type(module).__name__} is not a registered quantizable layer type")
    return spec.param


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(module path, module)]`` of every quantizable module in ``model`` (registered types,
    see :func:`register_layer`), in module order (``model.named_modules()``; a module reachable
    twice is listed once). May be empty.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if is_quantizable(m)]


def quantizable_layer_names(model: nn.Module) -> list[str]:
    """Module paths of :func:`quantizable_layers`."""
    return [n for n, _ in quantizable_layers(model)]


def weight_of(module: nn.Module, name: str = "") -> torch.Tensor:
    """The quantized weight Parameter of ``module`` (or of its sub-module at path ``name``):
    ``weight``, or the registered Parameter of its type (``in_proj_weight`` for MHA).

    Raises:
        TypeError: the module has no weight tensor.
    """
    m = module.get_submodule(name) if name else module
    spec = layer_spec(m)
    w = getattr(m, spec.param if spec is not None else "weight", None)
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

    type: type[nn.Module] | str
    mid_inputs: Callable[[nn.Module], tuple[str, ...]]


_BLOCKS: dict[type[nn.Module] | str, BlockSpec] = {}


def register_block(
    block_type: type[nn.Module] | str,
    mid_inputs: Sequence[str] | Callable[[nn.Module], Sequence[str]] = (),
) -> BlockSpec:
    """Reconstruct modules of ``block_type`` as one unit in BRECQ.

    Args:
        block_type: an ``nn.Module`` subclass, or its qualified name
            (``"transformers.models.bert.modeling_bert.BertLayer"``: no import needed).
        mid_inputs: the relative names of the block's layers fed by an intermediate activation
            (e.g. ``("conv2",)`` for a ``BasicBlock``), or a function of the block instance
            returning them (for blocks whose layout depends on their arguments).

    Returns the :class:`BlockSpec` (registering a type again replaces its spec).

    Raises:
        TypeError: ``block_type`` is not an ``nn.Module`` subclass.
    """
    if not (isinstance(block_type, str)
            or (isinstance(block_type, type) and issubclass(block_type, nn.Module))):
        raise TypeError(f"block_type must be an nn.Module subclass or a qualified class name, "
                        f"got {block_type!r}")
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
        spec = _BLOCKS.get(cls) or _BLOCKS.get(f"{cls.__module__}.{cls.__qualname__}")
        if spec is not None:
            return spec
    return None


def block_types() -> tuple[type[nn.Module] | str, ...]:
    """The registered block types."""
    return tuple(_BLOCKS)


def _inverted_residual_mid_inputs(block: nn.Module) -> tuple[str, ...]:
    """Every quantizable layer of a MobileNetV2 block but the first (expansion or depthwise
    convolution): each is fed by the previous layer's ReLU6 output."""
    names = [n for n, _ in quantizable_layers(block)]
    return tuple(names[1:])


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace every Hugging Face ``Conv1D`` in ``model`` (in place) by the equivalent
    ``nn.Linear`` (weight transposed to ``(out, in)``), so per-channel grids run per output
    channel. Returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            spec = layer_spec(child)
            if spec is None or spec.out_axis != 1:
                continue
            w = getattr(child, spec.param)
            bias = getattr(child, "bias", None)
            lin = nn.Linear(w.shape[0], w.shape[1], bias=bias is not None).to(w.device, w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w.t())
                if bias is not None:
                    lin.bias.copy_(bias)
            setattr(parent, name, lin)
    return model


for _t in QUANTIZABLE_TYPES:
    register_layer(_t)
register_layer(nn.MultiheadAttention, "in_proj_weight")
register_layer("transformers.pytorch_utils.Conv1D", "weight", out_axis=1)

register_block(BasicBlock, ("conv2",))
register_block(Bottleneck, ("conv2", "conv3"))
register_block(InvertedResidual, _inverted_residual_mid_inputs)


def _all_but_block_input(block: nn.Module) -> tuple[str, ...]:
    """Pre-LayerNorm transformer blocks: every layer's input is an intermediate activation."""
    return tuple(n for n, _ in quantizable_layers(block))


def _bert_mid_inputs(block: nn.Module) -> tuple[str, ...]:
    """A post-LN BERT layer: q, k, v read the block's input; the rest intermediate ones."""
    return tuple(n for n, _ in quantizable_layers(block) if not n.startswith("attention.self."))


# Transformer blocks as reconstruction units (attention and MLP inside one unit). The block is
# replayed on its hidden states alone: calibrate with unpadded batches (no attention mask).
register_block(EncoderBlock, _all_but_block_input)  # torchvision ViT
register_block("transformers.models.bert.modeling_bert.BertLayer", _bert_mid_inputs)
register_block("transformers.models.gpt2.modeling_gpt2.GPT2Block", _all_but_block_input)
