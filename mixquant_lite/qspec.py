"""A plan's quantizer (:class:`QuantSpec`) and a weight stored as integer codes
(:class:`IntegerWeight`), on top of the primitives of :mod:`mixquant_lite.quant`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .groups import GROUP_SIZES, SCALE_BITS, check_group_size, input_dim, plan_storage
from .quant import (
    check_granularity,
    check_range_method,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
)

__all__ = ["QuantSpec", "IntegerWeight", "table_spec", "spec_storage"]


@dataclass(frozen=True)
class QuantSpec:
    """How a plan's weights are quantized: the grid's granularity, group size and range method.

    ``granularity``: one of :data:`~mixquant_lite.quant.GRANULARITIES` (``"per_tensor"``,
    ``"per_channel"``, ``"per_group"``); ``group_size``: one of
    :data:`~mixquant_lite.groups.GROUP_SIZES` (32, 64, 128) with ``"per_group"`` and only then;
    ``range_method``: ``"minmax"`` or ``"mse"``. Validated on construction.

    A layer whose input dimension ``K`` is not a multiple of ``group_size`` (e.g. a 3-channel
    3x3 stem, ``K = 27``) is quantized **per channel** instead (:meth:`for_shape`; no ragged last
    group): :attr:`BitPlan.fallback_layers <mixquant_lite.plan.BitPlan.fallback_layers>` names
    such layers and the storage accounting counts them per channel.
    """

    granularity: str = "per_tensor"
    range_method: str = "minmax"
    group_size: int | None = None

    def __post_init__(self) -> None:
        check_granularity(self.granularity)
        check_range_method(self.range_method)
        if self.granularity == "per_group":
            if self.group_size is None:
                raise ValueError(f"granularity='per_group' needs group_size in {GROUP_SIZES}")
            object.__setattr__(self, "group_size", check_group_size(self.group_size))
        elif self.group_size is not None:
            raise ValueError(f"group_size goes with granularity='per_group' only, got "
                             f"group_size={self.group_size!r} with {self.granularity!r}")

    @property
    def per_channel(self) -> bool:
        return self.granularity == "per_channel"

    def fits(self, shape: tuple[int, ...] | torch.Size) -> bool:
        """Whether this spec's grid applies to a weight of ``shape`` as it is (per group: at
        least 2 dimensions and an input dimension that ``group_size`` divides)."""
        if self.group_size is None:
            return True
        return len(tuple(shape)) >= 2 and input_dim(shape) % self.group_size == 0

    def for_shape(self, shape: tuple[int, ...] | torch.Size) -> QuantSpec:
        """The spec used for a weight of ``shape``: this one, or per channel (same range
        method) when the group size does not divide the weight's input dimension."""
        return self if self.fits(shape) else QuantSpec("per_channel", self.range_method)

    def qparams(self, w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`choose_qparams` of ``w`` at ``bits`` with :meth:`for_shape` of ``w``:
        shapes ``()``, ``(C,)`` or ``(C, K / group_size)``."""
        spec = self.for_shape(w.shape)
        return choose_qparams(w, bits, spec.granularity, spec.range_method, spec.group_size)

    def fake_quantize(self, w: torch.Tensor, bits: int) -> torch.Tensor:
        """``w`` quantized-dequantized on this spec's grid (same shape and dtype)."""
        spec = self.for_shape(w.shape)
        return fake_quantize(w, bits, per_channel=spec.per_channel,
                             range_method=spec.range_method, group_size=spec.group_size)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"granularity": self.granularity, "range_method": self.range_method}
        if self.group_size is not None:
            out["group_size"] = self.group_size
        return out


@dataclass(frozen=True)
class IntegerWeight:
    """A weight as integer codes on an affine grid: ``W = (codes - zero_point) * scale``.

    The one integer-weight type: round-to-nearest (``export``), BRECQ's learned rounding and
    GPTQ all hand their layers over as this. ``codes``: an integer tensor of the weight's shape
    in ``0 .. 2^bits - 1`` (uint8 for ``bits <= 8`` or int32/int64); ``scale``: float32 and
    ``zero_point``: integer, shape ``()`` per tensor, ``(C_out,)`` per channel or
    ``(C_out, K / group_size)`` per group (as :func:`choose_qparams` returns them); ``dtype``:
    the weight's float dtype.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    dtype: torch.dtype = torch.float32

    def dequantize(self) -> torch.Tensor:
        """The float weight, :func:`dequantize_affine` of the codes (bit for bit what a model
        built from this weight holds)."""
        return dequantize_affine(self.codes, self.scale, self.zero_point, self.dtype)


def table_spec(table: Any) -> QuantSpec:
    """The quantizer a QE table measured (min/max ranges, its granularity): the spec of the
    plans made from it."""
    return QuantSpec("per_channel" if table.per_channel else "per_tensor", "minmax")


def spec_storage(spec: QuantSpec, shapes: Mapping[str, Sequence[int]], bits: Mapping[str, int],
                 scale_bits: int = SCALE_BITS) -> dict[str, Any]:
    """:func:`mixquant_lite.groups.plan_storage` of ``{layer: bits}`` with each layer's grid
    :meth:`QuantSpec.for_shape` (a per-group spec's fallback layers counted per channel)."""
    out = {"numel": 0, "code_bits": 0, "grid_bits": 0, "total_bits": 0}
    for name, b in bits.items():
        one = spec.for_shape(tuple(shapes[name]))
        part = plan_storage({name: shapes[name]}, {name: b}, one.granularity, one.group_size,
                            scale_bits)
        for key in out:
            out[key] += part[key]
    avg = out["total_bits"] / out["numel"] if out["numel"] else float("nan")
    return {**out, "avg_bits": avg, "size_bytes": out["total_bits"] / 8}
