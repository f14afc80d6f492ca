"""``BitPlan``: one bit-width per quantizable layer, its summaries, JSON and application.

Definitions: ``docs/method.md`` ("The bit-width plan"):

- average bit-width: weighted by each layer's number of weights;
- weight storage: ``sum over layers of numel * bits / 8`` bytes (weights only, biases excluded);
- a plan is serialisable (JSON) and can be applied to a model (vanilla asymmetric PTQ:
  round-to-nearest with the quantizer of :mod:`mixquant_lite.quant`).

A plan stores the weight count of each layer next to its bits, so the summaries and a JSON
round trip need no model and no QE table.
"""
from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from .groups import SCALE_BITS
from .layers import is_quantizable, weight_of
from .qspec import QuantSpec, spec_storage, table_spec
from .quant import check_bits

if TYPE_CHECKING:
    from .table import QETable

__all__ = ["BitPlan", "fmt_bytes"]

_FORMAT = "mixquant-lite/bitplan"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class BitPlan:
    """Per-layer bit-widths for the ``Conv2d``/``Linear`` weights of a model.

    A plan is immutable: ``bits``, ``numel`` and ``meta`` are read-only mappings (copies of
    what was passed); it pickles, deep-copies and round-trips through JSON.

    Attributes:
        bits: ``{layer path: bits}`` (ints in ``1..16``), in module order.
        numel: ``{layer path: number of weights}`` for the same layers.
        spec: the quantizer (:class:`~mixquant_lite.quant.QuantSpec`: granularity and range
            method) that :meth:`apply`, :func:`mixquant_lite.brecq` and
            :func:`mixquant_lite.export` use; a plan from a QE table carries the table's.
        meta: free-form JSON-able provenance (e.g. ``{"method": "mixquant", "qem": 100.0}``).
        fixed: ``{layer: bits}`` of the layers held at a given bit-width when the plan was made
            (e.g. first and last at 8); a subset of ``bits``.
        shapes: ``{layer: weight shape}`` for all layers, or empty (unknown: plans made from a
            QE table). Needed for the true storage (:meth:`storage`: codes plus grids) and for
            :attr:`fallback_layers`; :meth:`with_shapes` adds them from a model.
    """

    bits: Mapping[str, int]
    numel: Mapping[str, int]
    spec: QuantSpec = field(default_factory=QuantSpec)
    meta: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, int] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.bits, Mapping) or not isinstance(self.numel, Mapping):
            raise TypeError("bits and numel must be mappings {layer: int}")
        if not self.bits:
            raise ValueError("a plan needs at least one layer")
        if list(self.bits) != list(self.numel):
            missing = sorted(set(self.bits) ^ set(self.numel))
            if missing:
                raise ValueError(f"bits and numel must name the same layers; differ on {missing}")
        bits = {str(k): check_bits(v, f"bits of layer {k!r}") for k, v in self.bits.items()}
        numel = {}
        for k in bits:
            n = self.numel[k]
            if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
                raise TypeError(f"numel of layer {k!r} must be an int, got {n!r}")
            if int(n) <= 0:
                raise ValueError(f"numel of layer {k!r} must be positive, got {n}")
            numel[k] = int(n)
        object.__setattr__(self, "bits", MappingProxyType(bits))
        object.__setattr__(self, "numel", MappingProxyType(numel))
        if not isinstance(self.spec, QuantSpec):
            raise TypeError(f"spec must be a QuantSpec, got {type(self.spec).__name__}")
        wrong = {k: v for k, v in self.fixed.items() if bits.get(k) != v}
        if wrong:
            raise ValueError(f"fixed layers must be in the plan at their bits, got {wrong}")
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        object.__setattr__(self, "fixed", MappingProxyType({str(k): int(v)
                                                            for k, v in self.fixed.items()}))
        object.__setattr__(self, "shapes", MappingProxyType(self._checked_shapes(numel)))

    def _checked_shapes(self, numel: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        if not self.shapes:
            return {}
        shapes = {str(k): tuple(int(d) for d in v) for k, v in self.shapes.items()}
        if list(shapes) != list(numel):
            raise ValueError("shapes must name exactly the plan's layers, in its order")
        wrong = [k for k, sh in shapes.items() if math.prod(sh) != numel[k]]
        if wrong:
            raise ValueError(f"shapes of {wrong[:3]} do not match their numel")
        return shapes

    def __reduce__(self):  # read-only mappings do not pickle: rebuild from plain dicts
        return (type(self), (dict(self.bits), dict(self.numel), self.spec, dict(self.meta),
                             dict(self.fixed), dict(self.shapes)))

    @property
    def per_channel(self) -> bool:
        """Whether the spec's grids are per output channel."""
        return self.spec.per_channel

    def with_spec(self, spec: QuantSpec) -> BitPlan:
        """The same plan quantized with ``spec``."""
        return BitPlan(dict(self.bits), dict(self.numel), spec, dict(self.meta), dict(self.fixed),
                       dict(self.shapes))

    def with_shapes(self, model: nn.Module) -> BitPlan:
        """The same plan with its layers' weight shapes read from ``model`` (checked with
        :meth:`check_model`)."""
        self.check_model(model)
        shapes = {k: tuple(weight_of(model, k).shape) for k in self.bits}
        return BitPlan(dict(self.bits), dict(self.numel), self.spec, dict(self.meta),
                       dict(self.fixed), shapes)

    def _need_shapes(self, what: str) -> Mapping[str, tuple[int, ...]]:
        if not self.shapes:
            raise ValueError(f"{what} needs the layers' shapes: use plan.with_shapes(model)")
        return self.shapes

    @property
    def fallback_layers(self) -> tuple[str, ...]:
        """Layers a per-group spec quantizes per channel instead (their input dimension is not
        a multiple of ``spec.group_size``; see :meth:`QuantSpec.for_shape`). Empty for the
        other granularities.

        Raises:
            ValueError: a per-group plan without :attr:`shapes`.
        """
        if self.spec.group_size is None:
            return ()
        shapes = self._need_shapes("fallback_layers of a per-group plan")
        return tuple(k for k, sh in shapes.items() if not self.spec.fits(sh))

    def storage(self, scale_bits: int = SCALE_BITS) -> dict[str, Any]:
        """True storage of the quantized weights: :func:`mixquant_lite.groups.plan_storage`
        (``numel``, ``code_bits``, ``grid_bits``, ``total_bits``, ``avg_bits``, ``size_bytes``)
        with each layer's grid (:meth:`QuantSpec.for_shape`: fallback layers per channel); every
        grid is a ``scale_bits`` step (float32 by default, what :func:`mixquant_lite.export`
        writes) plus a ``b``-bit zero point. Biases not counted.

        Raises:
            ValueError: the plan has no :attr:`shapes`.
        """
        return spec_storage(self.spec, self._need_shapes("storage"), self.bits, scale_bits)

    @property
    def bits_per_weight(self) -> float:
        """True bits per weight, grids included (:meth:`storage`'s ``avg_bits``); needs
        :attr:`shapes`. :attr:`avg_bits` counts the codes only."""
        return float(self.storage()["avg_bits"])

    # ------------------------------------------------------------------ summaries
    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.bits)

    @property
    def total_numel(self) -> int:
        """Number of weights the plan covers."""
        return sum(self.numel.values())

    @property
    def total_bits(self) -> int:
        """Weight storage in bits: ``sum(numel * bits)``."""
        return sum(self.numel[k] * b for k, b in self.bits.items())

    @property
    def avg_bits(self) -> float:
        """Average bit-width, weighted by each layer's number of weights."""
        return self.total_bits / self.total_numel

    @property
    def size_bytes(self) -> float:
        """Weight storage in bytes, ``sum(numel * bits) / 8`` (biases and grids excluded)."""
        return self.total_bits / 8

    @property
    def f32_bytes(self) -> int:
        """Storage of the same weights in float32, ``4 * sum(numel)`` bytes."""
        return 4 * self.total_numel

    @property
    def compression(self) -> float:
        """``f32_bytes / size_bytes`` (32 / avg_bits)."""
        return self.f32_bytes / self.size_bytes

    def squared_error(self, table: QETable) -> float:
        """Total squared weight error ``sum(numel * QE(layer, bits))`` of the plan under ``table``
        (the objective of :func:`mixquant_lite.search.plan_for_budget`)."""
        return math.fsum(self.numel[k] * table.qe(k, b) for k, b in self.bits.items())

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: ``numel``, ``bits``; index ``layer``."""
        return pd.DataFrame(
            {"numel": list(self.numel.values()), "bits": list(self.bits.values())},
            index=pd.Index(list(self.bits), name="layer"),
        )

    def summary(self) -> str:
        """One line: average bits, weight storage and the ratio to float32 (and, when the
        shapes are known, the true bits per weight with the grids)."""
        grids = f" ({self.bits_per_weight:.3f} with grids)" if self.shapes else ""
        return (
            f"{len(self.bits)} layers, {self.total_numel:,} weights: average {self.avg_bits:.3f} "
            f"bits{grids}, {fmt_bytes(self.size_bytes)} vs {fmt_bytes(self.f32_bytes)} in f32 "
            f"({self.compression:.2f}x smaller)"
        )

    def __repr__(self) -> str:
        return (f"BitPlan({self.summary()}, {self.spec.granularity}, "
                f"{self.spec.range_method})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitPlan):
            return NotImplemented
        return (
            list(self.bits.items()) == list(other.bits.items())
            and dict(self.numel) == dict(other.numel)
            and self.spec == other.spec
            and dict(self.fixed) == dict(other.fixed)
            and dict(self.shapes) == dict(other.shapes)
        )

    __hash__ = None  # type: ignore[assignment]  # equality is by value; not a dict key

    # ------------------------------------------------------------------ construction
    @classmethod
    def uniform(cls, table: QETable, bits: int) -> BitPlan:
        """Every layer of ``table`` at ``bits`` (any int in ``1..16``)."""
        bits = check_bits(bits)
        return cls(
            dict.fromkeys(table.layers, bits),
            dict(table.numel),
            table_spec(table),
            {"method": "uniform"},
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        extra = ({"bits_per_weight": self.bits_per_weight,
                  "fallback_layers": list(self.fallback_layers)} if self.shapes else {})
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "per_channel": self.per_channel,
            "spec": self.spec.to_dict(),
            "fixed": dict(self.fixed),
            "layers": [
                {"name": k, "numel": self.numel[k], "bits": b,
                 **({"shape": list(self.shapes[k])} if self.shapes else {})}
                for k, b in self.bits.items()
            ],
            "avg_bits": self.avg_bits,
            "size_bytes": self.size_bytes,
            **extra,
            "meta": dict(self.meta),
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int | None = 2) -> str:
        """The plan as JSON text; also written to ``path`` when given. ``avg_bits`` and
        ``size_bytes`` are included for readers; :meth:`from_json` recomputes them."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> BitPlan:
        """A plan from JSON text or from a file path holding it.

        Raises:
            ValueError: not a BitPlan document (the message says what is wrong).
        """
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a BitPlan document (expected format {_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported BitPlan version {data.get('version')!r}")
        try:
            layers = data["layers"]
            bits = {e["name"]: e["bits"] for e in layers}
            numel = {e["name"]: e["numel"] for e in layers}
            shapes = ({e["name"]: e["shape"] for e in layers}
                      if layers and all("shape" in e for e in layers) else {})
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed BitPlan layers: {e!r}") from None
        if len(bits) != len(layers):
            raise ValueError("BitPlan document names a layer twice")
        spec = data.get("spec")
        if spec is None:  # a version-1 document written by 0.1 records per_channel only
            spec = {"granularity": "per_channel" if data.get("per_channel") else "per_tensor"}
        try:
            qspec = QuantSpec(**spec)
        except TypeError as e:
            raise ValueError(f"malformed BitPlan spec {spec!r}: {e}") from None
        return cls(bits, numel, qspec, data.get("meta") or {}, data.get("fixed") or {}, shapes)

    # ------------------------------------------------------------------ application
    def check_model(self, model: nn.Module) -> None:
        """Check that ``model`` has every planned layer, as a ``Conv2d``/``Linear`` with the
        planned number of weights.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
            ValueError: a planned layer is missing, of another type or size (named).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        modules = dict(model.named_modules())
        missing = [name for name in self.numel if name not in modules]
        if missing:
            more = f" (nor are {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(f"layer {missing[0]!r} of the plan is not in the model{more}")
        for name, n in self.numel.items():
            m = modules[name]
            if not is_quantizable(m):
                raise ValueError(f"layer {name!r} is a {type(m).__name__}, not a quantizable "
                                 "layer type (layers.register_layer)")
            if weight_of(m).numel() != n:
                raise ValueError(
                    f"layer {name!r} has {weight_of(m).numel()} weights, the plan expects {n}"
                )
            if self.shapes and tuple(weight_of(m).shape) != self.shapes[name]:
                raise ValueError(f"layer {name!r} has shape {tuple(weight_of(m).shape)}, the "
                                 f"plan expects {self.shapes[name]}")

    def apply(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` whose planned layers' weights are quantized-dequantized
        (vanilla asymmetric round-to-nearest PTQ on this plan's :attr:`spec`, the grid of
        :meth:`QuantSpec.fake_quantize`: per group where the group size divides the layer's
        input dimension, else per channel). Biases and unplanned layers are left as they are.

        Raises:
            ValueError: a planned layer is missing from ``model``, is not ``Conv2d``/``Linear``
                or has a different number of weights (the message names the layer).
        """
        self.check_model(model)
        out = copy.deepcopy(model)
        with torch.no_grad():
            for name, b in self.bits.items():
                w = weight_of(out, name)
                w.copy_(self.spec.fake_quantize(w, b))
        return out


def fmt_bytes(n: float) -> str:
    """``n`` bytes in words: ``"1.23 MB"``, ``"512 B"``."""
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f} B"
