"""Per-group layout of a weight and what a quantized weight costs to store (``docs/gptq.md``).

**Groups.** A weight of shape ``(C_out, ...)`` is read as a matrix ``(C_out, K)`` whose row is
one output channel and whose ``K`` columns are its *input dimension*: ``in_features`` for a
``Linear``, ``in_channels / groups * kh * kw`` for a ``Conv2d`` (PyTorch's own flattening,
``w.reshape(C_out, -1)``, i.e. ``F.unfold``'s column order). A *group* is ``g`` consecutive
columns of one row, ``g`` in :data:`GROUP_SIZES`; each group has its own step and zero point, so
a layer has ``C_out * K / g`` grids. ``K`` must be a multiple of ``g``: there is **no ragged last
group** (a smaller last group would need its own storage rule and is not what int4 kernels
load); such a layer is refused with an error naming ``group_size`` and the accepted values, and
the caller decides what to do with it (e.g. keep that layer per channel).

**Storage format** (what :func:`storage_bits` counts, and what :func:`mixquant_lite.export`
writes): the ``b``-bit integer codes, and for every grid one float32 step (the exact step the
quantizer used, so a loaded model is bit for bit the simulated one) and one ``b``-bit zero
point; ``scale_bits=16`` counts a float16 step instead. So per tensor one grid, per channel one per
output row, per group one per ``g`` weights of a row; biases are not counted (they stay float).
Bits per weight of a layer with ``n`` weights and ``m`` grids: ``b + m * (32 + b) / n``; e.g.
4-bit ``g = 128``: ``4 + 36 / 128 = 4.281`` (``4.156`` with float16 steps).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "GROUP_SIZES",
    "SCALE_BITS",
    "check_group_size",
    "input_dim",
    "group_rows",
    "n_grids",
    "storage_bits",
    "bits_per_weight",
    "plan_storage",
]

GROUP_SIZES = (32, 64, 128)
SCALE_BITS = 32  # every grid stores its step as float32, as export writes it (zero: b bits)
_GRANULARITIES = ("per_tensor", "per_channel", "per_group")


def check_group_size(group_size: object, in_dim: int | None = None, name: str = "w") -> int:
    """``group_size`` as an int after checking it is in :data:`GROUP_SIZES` and, when
    ``in_dim`` is given, that it divides the input dimension ``in_dim``.

    Raises:
        ValueError: ``group_size`` not in ``(32, 64, 128)``, or ``in_dim`` not a multiple of it.
    """
    if (isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral)
            or int(group_size) not in GROUP_SIZES):
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size!r}")
    g = int(group_size)
    if in_dim is not None and in_dim % g:
        ok = [s for s in GROUP_SIZES if in_dim % s == 0]
        raise ValueError(
            f"group_size={g} does not divide the input dimension {in_dim} of {name} (no ragged "
            f"last group); group sizes that fit this layer: {ok or 'none'} of {GROUP_SIZES}; "
            "otherwise quantize it per channel"
        )
    return g


def input_dim(shape: Sequence[int] | torch.Size) -> int:
    """The input dimension ``K`` of a weight of ``shape`` ``(C_out, ...)``: the product of all
    but the first axis (1 for a 1-D tensor)."""
    k = 1
    for s in tuple(shape)[1:]:
        k *= int(s)
    return k


def group_rows(w: torch.Tensor, group_size: int, name: str = "w") -> torch.Tensor:
    """``w`` ``(C_out, ...)`` as a ``(C_out * K / g, g)`` view (a copy if ``w`` is not
    contiguous): row ``c * (K / g) + j`` is group ``j`` of output channel ``c``.

    Raises:
        ValueError: ``w`` has fewer than 2 dimensions, bad ``group_size``, or ``K % g != 0``.
    """
    if w.dim() < 2:
        raise ValueError(f"per_group needs {name} with at least 2 dimensions (C_out, K), got "
                         f"shape {tuple(w.shape)}")
    g = check_group_size(group_size, input_dim(w.shape), name)
    return w.reshape(-1, g)


def n_grids(shape: Sequence[int] | torch.Size, granularity: str,
            group_size: int | None = None) -> int:
    """Number of (step, zero point) grids of a weight of ``shape`` at ``granularity``."""
    if granularity == "per_tensor":
        return 1
    if granularity == "per_channel":
        return int(tuple(shape)[0])
    if granularity == "per_group":
        if group_size is None:
            raise ValueError(f"per_group needs a group_size in {GROUP_SIZES}")
        k = input_dim(shape)
        return int(tuple(shape)[0]) * (k // check_group_size(group_size, k))
    raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")


def storage_bits(shape: Sequence[int] | torch.Size, bits: int, granularity: str = "per_tensor",
                 group_size: int | None = None, scale_bits: int = SCALE_BITS) -> int:
    """Bits that store a ``bits``-bit weight of ``shape``: ``numel * bits`` for the codes plus
    ``(scale_bits + bits)`` per grid (a float32 step by default, as ``export`` writes it, and a
    ``bits``-bit zero point). Biases not counted. ``scale_bits=16`` counts float16 steps."""
    numel = int(tuple(shape)[0]) * input_dim(shape) if len(tuple(shape)) else 1
    return numel * int(bits) + n_grids(shape, granularity, group_size) * (scale_bits + int(bits))


def bits_per_weight(shape: Sequence[int] | torch.Size, bits: int,
                    granularity: str = "per_tensor", group_size: int | None = None,
                    scale_bits: int = SCALE_BITS) -> float:
    """True bits per weight including the grids: :func:`storage_bits` / ``numel``."""
    numel = int(tuple(shape)[0]) * input_dim(shape)
    return storage_bits(shape, bits, granularity, group_size, scale_bits) / numel


def plan_storage(shapes: Mapping[str, Sequence[int] | torch.Size], bits: Mapping[str, int],
                 granularity: str = "per_tensor", group_size: int | None = None,
                 scale_bits: int = SCALE_BITS) -> dict:
    """Size of a plan ``{layer: bits}`` over layers of ``shapes`` ``{layer: weight shape}``.

    Returns ``{"numel", "code_bits", "grid_bits", "total_bits", "avg_bits", "size_bytes"}``:
    ``avg_bits`` = total bits (codes + grids) / weights, the number to compare plans of different
    granularities by; ``size_bytes`` = total bits / 8. Layers absent from ``bits`` are skipped.
    """
    numel = code = total = 0
    for name, b in bits.items():
        shape = shapes[name]
        n = int(tuple(shape)[0]) * input_dim(shape)
        numel += n
        code += n * int(b)
        total += storage_bits(shape, b, granularity, group_size, scale_bits)
    return {"numel": numel, "code_bits": code, "grid_bits": total - code, "total_bits": total,
            "avg_bits": total / numel if numel else float("nan"), "size_bytes": total / 8}
