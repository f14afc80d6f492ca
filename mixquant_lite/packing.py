"""Real integer export: a plan's weights as bit-packed integer codes in a safetensors file.

``export(model, plan, path)`` quantizes every planned layer with the package's quantizer
(:func:`~mixquant_lite.quant.choose_qparams`, :func:`~mixquant_lite.quant.quantize_affine`) and
writes, per layer ``L``:

- ``L.weight.codes``: the codes ``q`` in ``0 .. 2^b - 1`` packed ``b`` bits each into a ``uint8``
  stream (little-endian bit order, ``ceil(numel * b / 8)`` bytes), in the weight's row-major
  element order;
- ``L.weight.scale``: float32, shape ``()`` per tensor, ``(C_out,)`` per channel or
  ``(C_out, K / group_size)`` per group (a layer no group size fits: per channel, see
  :meth:`~mixquant_lite.qspec.QuantSpec.for_shape`);
- ``L.weight.zero_point``: the zero points (in ``0 .. 2^b - 1``) packed ``b`` bits each like
  the codes, one per scale in the scale's row-major order;

and every other tensor of the model's ``state_dict`` (biases, BatchNorm, unplanned layers) as it
is, under ``float.<key>``. The header metadata holds the plan (JSON), each layer's shape and
dtype, and the architecture name when known.

``load_quantized(path)`` unpacks the codes, dequantizes them (``(q - z) * s``, float32, cast to the
weight's dtype) and loads everything into a model of the recorded architecture (or into a
``model=`` skeleton you pass): its outputs equal ``plan.apply(model)``'s bit for bit, because
``dequantize_affine(quantize_affine(W))`` is the fused fake-quantize round trip exactly.

Storage: codes and grids are exactly what :meth:`BitPlan.storage
<mixquant_lite.plan.BitPlan.storage>` counts (``b``-bit codes, per grid a float32 step and a
``b``-bit zero point), each packed stream rounded up to whole bytes; the float tensors and the
JSON header come on top (:class:`ExportInfo` gives each part). Float32 steps, not float16: the
file holds the exact step the simulation used, so loading is bit for bit (``docs/gptq.md``).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .layers import weight_of
from .plan import BitPlan
from .qspec import IntegerWeight, QuantSpec
from .quant import check_bits, dequantize_affine, quantize_affine

__all__ = ["export", "load_quantized", "read_plan", "pack_bits", "unpack_bits", "ExportInfo",
           "build_architecture", "register_architecture"]

_FORMAT = "mixquant-lite/quantized"
_VERSION = "2"  # 2: zero points packed b bits each, per-group grids


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer ``codes`` (any shape, each ``< 2^bits``) into a ``uint8``
    array of ``ceil(codes.size * bits / 8)`` bytes, ``bits`` bits per code, least significant
    bit first.

    Raises:
        ValueError: a code outside ``0 .. 2^bits - 1``.
    """
    bits = check_bits(bits)
    flat = np.asarray(codes).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > 2**bits - 1):
        raise ValueError(f"codes must be in 0..{2**bits - 1} for {bits} bits")
    if bits == 8:
        return flat.astype(np.uint8)
    planes = ((flat[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as an int64 array ``(count,)``.

    Raises:
        ValueError: ``packed`` holds fewer than ``count * bits`` bits.
    """
    bits = check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if packed.size * 8 < count * bits:
        raise ValueError(f"{packed.size} bytes cannot hold {count} codes of {bits} bits")
    if bits == 8:
        return packed[:count].astype(np.int64)
    planes = np.unpackbits(packed, count=count * bits, bitorder="little").reshape(count, bits)
    return planes.astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))


@dataclass(frozen=True)
class ExportInfo:
    """Sizes of an exported file, in bytes.

    ``codes``: packed integer codes; ``qparams``: scales and zero points; ``float_tensors``:
    the other tensors (biases, BatchNorm, unplanned layers); ``header``: safetensors header
    (tensor table and metadata, incl. the plan JSON); ``file``: the file (the sum of the four);
    ``plan_size_bytes``: the plan's true storage, codes plus grids
    (``plan.with_shapes(model).storage()["size_bytes"]``).
    """

    path: str
    file: int
    codes: int
    qparams: int
    float_tensors: int
    header: int
    plan_size_bytes: float

    @property
    def quantized_overhead(self) -> float:
        """``(codes + qparams) / plan_size_bytes - 1``: what the byte padding of the packed
        streams adds to the plan's true storage (a small fraction, >= 0)."""
        return (self.codes + self.qparams) / self.plan_size_bytes - 1.0


# name -> (model class, builder from a state_dict); see register_architecture.
_ARCHITECTURES: dict[str, tuple[type, Callable[[Mapping[str, torch.Tensor]], nn.Module]]] = {}


def register_architecture(
    name: str, cls: type, build: Callable[[Mapping[str, torch.Tensor]], nn.Module]
) -> None:
    """Record architecture ``name``: models of class ``cls`` are exported with this name, and
    :func:`load_quantized` rebuilds them with ``build(state_dict)`` (an untrained model shaped
    to fit it). :mod:`mixquant_lite.zoo.models` registers ``"resnet20"``."""
    _ARCHITECTURES[name] = (cls, build)


def _arch_name(model: nn.Module) -> str | None:
    for name, (cls, _) in _ARCHITECTURES.items():
        if type(model) is cls:
            return name
    return None


def build_architecture(arch: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """An untrained model of architecture ``arch`` (a registered name, see
    :func:`register_architecture`, or a torchvision model name) shaped to fit ``state``
    (number of classes, and what the registered builder reads).

    Raises:
        ValueError: an unknown architecture name.
    """
    import torchvision

    if arch in _ARCHITECTURES:
        return _ARCHITECTURES[arch][1](state)
    if arch in torchvision.models.list_models(module=torchvision.models):
        fc = state.get("fc.weight")
        kw = {"num_classes": fc.shape[0]} if fc is not None else {}
        return torchvision.models.get_model(arch, weights=None, **kw)
    raise ValueError(f"unknown architecture {arch!r}: use a torchvision model name or one "
                     f"registered with register_architecture ({sorted(_ARCHITECTURES)}; "
                     "import mixquant_lite.zoo.models for resnet20)")


def export(
    model: nn.Module,
    plan: BitPlan,
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    weights: Mapping[str, IntegerWeight] | None = None,
) -> ExportInfo:
    """Write ``model`` quantized by ``plan`` to ``path`` (safetensors; see the module docstring).

    Args:
        model: the float model the plan was made for (read, never modified).
        plan: its bit-widths and quantizer (``plan.spec``: granularity and range method).
        path: the file to write (written to a temporary file first, then renamed: never a
            half-written file).
        arch: architecture name recorded for :func:`load_quantized` (default: ``"resnet20"``
            for our ResNet-20; else none, and loading needs a ``model=`` skeleton).
        weights: the integer codes to write, per planned layer (``report.weights`` of
            :func:`mixquant_lite.brecq`, its learned rounding, or of :func:`mixquant_lite.gptq`):
            the model that was evaluated is what is written. ``None``: round-to-nearest on
            ``plan.spec``'s grid, the weights of ``plan.apply(model)``.

    Returns:
        :class:`ExportInfo` with the measured sizes.

    Raises:
        TypeError / ValueError: not a ``BitPlan``, a plan that does not fit the model.
    """
    from safetensors.torch import save_file

    if not isinstance(plan, BitPlan):
        raise TypeError(f"plan must be a BitPlan, got {type(plan).__name__}")
    plan.check_model(model)
    missing = [n for n in plan.bits if weights is not None and n not in weights]
    if missing:
        raise ValueError(f"weights has no integer codes for the planned layers {missing[:5]}")
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    codes_bytes = qparam_bytes = 0
    with torch.no_grad():
        for name, bits in plan.bits.items():
            w = weight_of(model, name).detach()
            iw = _integer_weight(w, bits, plan.spec) if weights is None else weights[name]
            if iw.bits != bits or tuple(iw.codes.shape) != tuple(w.shape):
                raise ValueError(f"weights[{name!r}] has {iw.bits} bits and shape "
                                 f"{tuple(iw.codes.shape)}; the plan and model: {bits}, "
                                 f"{tuple(w.shape)}")
            packed = torch.from_numpy(pack_bits(iw.codes.cpu().numpy(), bits))
            zp = torch.from_numpy(pack_bits(iw.zero_point.cpu().numpy(), bits))
            tensors[f"{name}.weight.codes"] = packed
            tensors[f"{name}.weight.scale"] = iw.scale.cpu().float().contiguous()
            tensors[f"{name}.weight.zero_point"] = zp
            codes_bytes += packed.numel()
            qparam_bytes += 4 * iw.scale.numel() + zp.numel()
            layers[name] = {"bits": bits, "shape": list(w.shape), "dtype": str(w.dtype),
                            "grid": list(iw.scale.shape)}
    planned = {f"{n}.weight" for n in plan.bits}
    float_bytes = 0
    for key, t in model.state_dict().items():
        if key not in planned:
            tensors[f"float.{key}"] = t.detach().cpu().clone().contiguous()
            float_bytes += t.numel() * t.element_size()
    metadata = {
        "format": _FORMAT, "version": _VERSION, "plan": plan.to_json(indent=None),
        "layers": json.dumps(layers), "granularity": plan.spec.granularity,
        "range_method": plan.spec.range_method, "arch": arch or _arch_name(model) or "",
        "batchnorm_folded": json.dumps(_folded(model)),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    size = path.stat().st_size
    return ExportInfo(str(path), size, codes_bytes, qparam_bytes, float_bytes,
                      size - codes_bytes - qparam_bytes - float_bytes,
                      plan.with_shapes(model).storage()["size_bytes"])


def _integer_weight(w: torch.Tensor, bits: int, spec: QuantSpec) -> IntegerWeight:
    """Round-to-nearest codes of ``w`` on ``spec``'s grid."""
    scale, zp = spec.qparams(w, bits)
    return IntegerWeight(quantize_affine(w, scale, zp, bits).cpu(), scale, zp, bits, w.dtype)


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors' own error types: not a safetensors file
        raise ValueError(f"{path} is not a safetensors file ({e})") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a mixquant-lite quantized model (format {_FORMAT!r})")
    if meta.get("version") != _VERSION:
        raise ValueError(f"{path}: unsupported version {meta.get('version')!r}")
    return load_file(str(path)), meta


def _folded(model: nn.Module) -> bool:
    """Whether ``model`` looks BatchNorm-folded: no BatchNorm and a convolution with a bias."""
    mods = list(model.modules())
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mods)
    conv_bias = any(isinstance(m, nn.Conv2d) and m.bias is not None for m in mods)
    return not has_bn and conv_bias and any(isinstance(m, nn.Identity) for m in mods)


def read_plan(path: str | os.PathLike) -> BitPlan:
    """The :class:`BitPlan` recorded in an exported file."""
    _, meta = _read(path)
    return BitPlan.from_json(meta["plan"])


def load_quantized(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The model stored by :func:`export`, in ``eval()`` mode on the CPU.

    Args:
        path: an exported file.
        model: a skeleton of the same architecture (its values are ignored and it is not
            modified); required when the file records no architecture name.

    Raises:
        ValueError: not an exported file, no architecture and no skeleton, or a skeleton whose
            tensors do not match the file.
    """
    tensors, meta = _read(path)
    layers = json.loads(meta["layers"])
    state: dict[str, torch.Tensor] = {k[len("float."):]: v for k, v in tensors.items()
                                      if k.startswith("float.")}
    for name, info in layers.items():
        bits, shape = int(info["bits"]), tuple(info["shape"])
        count = math.prod(shape)
        q = unpack_bits(tensors[f"{name}.weight.codes"].numpy(), bits, count).reshape(shape)
        scale = tensors[f"{name}.weight.scale"]
        grid = tuple(info["grid"])
        zp = torch.from_numpy(unpack_bits(tensors[f"{name}.weight.zero_point"].numpy(), bits,
                                          math.prod(grid))).to(torch.int32).reshape(grid)
        dtype = getattr(torch, info["dtype"].removeprefix("torch."))
        state[f"{name}.weight"] = dequantize_affine(torch.from_numpy(q), scale, zp, dtype)
    if model is None:
        if json.loads(meta.get("batchnorm_folded", "false")):
            raise ValueError(f"{path} holds a BatchNorm-folded model (e.g. from brecq): pass "
                             "model= a folded skeleton (mixquant_lite.recon.fold_bn(float_model))")
        if not meta.get("arch"):
            raise ValueError(f"{path} records no architecture: pass model= (a skeleton)")
        out = build_architecture(meta["arch"], state)
    else:
        import copy

        out = copy.deepcopy(model).cpu()
    try:
        out.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the model: {str(e).splitlines()[0]}") from None
    return out.eval()
