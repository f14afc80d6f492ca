"""A plan's quantizer (:class:`QuantSpec`) and a weight stored as integer codes
(:class:`IntegerWeight`), on top of the primitives of :mod:`mixquant_lite.quant`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .quant import (
    check_granularity,
    check_range_method,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
)

__all__ = ["QuantSpec", "IntegerWeight", "table_spec"]


@dataclass(frozen=True)
class QuantSpec:
    """How a plan's weights are quantized: the grid's granularity and its range method.

    ``granularity``: one of :data:`GRANULARITIES` (``"per_tensor"``, ``"per_channel"``);
    ``range_method``: one of :data:`RANGE_METHODS` (``"minmax"``, ``"mse"``). Validated on
    construction. A new granularity (e.g. per group, with its own size field) is one more
    accepted value plus a field here; :meth:`qparams` is the one place that turns a spec into
    a grid.
    """

    granularity: str = "per_tensor"
    range_method: str = "minmax"

    def __post_init__(self) -> None:
        check_granularity(self.granularity)
        check_range_method(self.range_method)

    @property
    def per_channel(self) -> bool:
        return self.granularity == "per_channel"

    def qparams(self, w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`choose_qparams` of ``w`` at ``bits`` with this spec."""
        return choose_qparams(w, bits, self.granularity, self.range_method)

    def fake_quantize(self, w: torch.Tensor, bits: int) -> torch.Tensor:
        """``w`` quantized-dequantized on this spec's grid (same shape and dtype)."""
        return fake_quantize(w, bits, per_channel=self.per_channel,
                             range_method=self.range_method)

    def to_dict(self) -> dict[str, str]:
        return {"granularity": self.granularity, "range_method": self.range_method}


@dataclass(frozen=True)
class IntegerWeight:
    """A weight as integer codes on an affine grid: ``W = (codes - zero_point) * scale``.

    ``codes``: int64, the weight's shape, in ``0 .. 2^bits - 1``; ``scale``: float32 and
    ``zero_point``: int32, shape ``()`` or ``(C_out,)``; ``dtype``: the weight's float dtype.
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
