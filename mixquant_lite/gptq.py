"""``gptq(model, calib_batches, plan, config)``: GPTQ with per-layer bit-widths from a plan.

GPTQ (Frantar et al. 2022, arXiv 2210.17323) quantizes each ``Linear`` / ``Conv2d`` weight
column by column, spreading each column's rounding error over the not-yet-quantized columns
through the inverse Hessian of the layer's inputs (the algorithm: :mod:`.gptq_core`;
definitions, storage and what was verified: ``docs/gptq.md``). Example::

    from mixquant_lite.gptq import GPTQConfig, gptq
    qmodel, report = gptq(model, calib_batches, 4, GPTQConfig(granularity="per_group",
                                                              group_size=128))
    report.to_frame()              # per layer: bits, error vs round-to-nearest, seconds
    report.weights["fc"].codes     # the integer codes and grids, for export

Layers are processed one at a time in execution order; each layer's Hessian is accumulated
from its inputs in the copy whose earlier layers are already quantized (as the paper does), each
forward pass stopping at the layer (a module called twice in one forward contributes its first
call's input). BatchNorm is not folded here: fold it first (``recon.folding.fold_bn``) to
quantize the weights BRECQ and the BN-folded QE tables see. The caller's model is never
modified.
"""
from __future__ import annotations

import copy
import dataclasses
import numbers
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .gptq_core import GridSpec, HessianAccumulator, gptq_weight, layer_matrix, output_error
from .groups import GROUP_SIZES, check_group_size
from .layers import quantizable_layers, weight_of
from .qspec import IntegerWeight, QuantSpec, spec_storage
from .quant import GRANULARITIES, RANGE_METHODS, check_bits, choose_qparams, quantize_affine

__all__ = ["GPTQConfig", "GPTQReport", "GPTQLayer", "gptq", "gptq_layer", "output_error"]


@dataclass(frozen=True)
class GPTQConfig:
    """Settings of one GPTQ run (validated on construction: ``ValueError`` naming the field).

    Attributes:
        block_size: columns per lazy-update block (paper 128).
        percdamp: damping ``percdamp * mean(diag H)`` added to ``H``'s diagonal (paper 0.01).
        act_order: quantize columns by decreasing ``H_jj`` (the reference's ``--act-order``).
        granularity: ``"per_channel"`` (one grid per output row), ``"per_group"`` or
            ``"per_tensor"``.
        group_size: ``32``, ``64`` or ``128`` with ``"per_group"`` (and only then); must divide
            ``block_size``. A layer whose input dimension it does not divide is quantized per
            channel (as ``BitPlan.apply`` does; listed in ``GPTQReport.fallback``).
        static_groups: per-group grids from the weights before GPTQ updates them (the
            reference's ``--static-groups``). ``None``: static exactly when ``act_order`` (with
            act-order a dynamic group would hold columns scattered over the row, which no
            per-group format stores); ``False`` with ``act_order`` is refused.
        range_method: ``"minmax"`` (the reference's grid) or ``"mse"``.
    """

    block_size: int = 128
    percdamp: float = 0.01
    act_order: bool = False
    granularity: str = "per_channel"
    group_size: int | None = None
    static_groups: bool | None = None
    range_method: str = "minmax"

    def __post_init__(self) -> None:
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1:
            raise ValueError(f"block_size must be an int >= 1, got {bs!r}")
        pd_ = self.percdamp
        if isinstance(pd_, bool) or not isinstance(pd_, numbers.Real) or not 0 <= pd_ <= 1:
            raise ValueError(f"percdamp must be a number in [0, 1], got {pd_!r}")
        for name in ("act_order",):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got "
                             f"{self.granularity!r}")
        if self.range_method not in RANGE_METHODS:
            raise ValueError(f"range_method must be one of {RANGE_METHODS}, got "
                             f"{self.range_method!r}")
        if self.static_groups not in (None, True, False):
            raise ValueError(f"static_groups must be None, True or False, got "
                             f"{self.static_groups!r}")
        if self.granularity != "per_group":
            if self.group_size is not None:
                raise ValueError(f"group_size goes with granularity='per_group' only, got "
                                 f"group_size={self.group_size!r} with {self.granularity!r}")
            return
        if self.group_size is None:
            raise ValueError(f"granularity='per_group' needs group_size in {GROUP_SIZES}")
        g = check_group_size(self.group_size)
        if bs % g:
            raise ValueError(f"block_size={bs} must be a multiple of group_size={g}")
        if self.act_order and self.static_groups is False:
            raise ValueError("act_order with per-group grids needs static_groups (None or True)")

    @property
    def static(self) -> bool:
        """Whether per-group grids are fixed before the updates (see ``static_groups``)."""
        return self.act_order if self.static_groups is None else self.static_groups

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def spec(self) -> QuantSpec:
        """The grid as a plan's :class:`~mixquant_lite.qspec.QuantSpec`."""
        return QuantSpec(self.granularity, self.range_method, self.group_size)

    def for_shape(self, shape: tuple[int, ...]) -> GPTQConfig:
        """This config for a weight of ``shape``: itself, or per channel when the group size
        does not divide the weight's input dimension."""
        if self.spec.fits(shape):
            return self
        return dataclasses.replace(self, granularity="per_channel", group_size=None,
                                   static_groups=None)


@dataclass
class GPTQLayer:
    """One layer's result. ``error`` / ``rtn_error``: mean over the layer's ``n_vectors``
    calibration input vectors ``x`` of ``||(W - W_hat) x||^2`` (output units squared) for GPTQ
    and for round-to-nearest on the same grid settings; ``reached``: ``False`` if no calibration
    input reached the layer (then it is rounded to nearest); ``seconds``: capture + GPTQ;
    ``solve_seconds``: GPTQ alone (factorisation and column loop)."""

    name: str
    bits: int
    n_vectors: int
    error: float
    rtn_error: float
    reached: bool
    seconds: float
    solve_seconds: float


@dataclass
class GPTQReport:
    """What :func:`gptq` did: ``layers`` (module order), ``weights`` (codes and grids per
    layer, what :func:`mixquant_lite.export` writes with ``weights=report.weights``),
    ``shapes``, ``config``, total ``seconds``, the layers left in float (``not_quantized``:
    not in the plan) and the per-group layers quantized per channel (``fallback``)."""

    layers: list[GPTQLayer]
    weights: dict[str, IntegerWeight]
    shapes: dict[str, tuple[int, ...]]
    config: GPTQConfig
    seconds: float
    not_quantized: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)

    @property
    def storage(self) -> dict:
        """:func:`mixquant_lite.qspec.spec_storage` of the quantized layers (codes + grids,
        fallback layers per channel)."""
        bits = {r.name: r.bits for r in self.layers}
        return spec_storage(self.config.spec, self.shapes, bits)

    @property
    def avg_bits(self) -> float:
        """True bits per weight, grids included (``docs/gptq.md``, storage format)."""
        return float(self.storage["avg_bits"])

    def to_frame(self):
        """One row per layer (pandas DataFrame) with the fields of :class:`GPTQLayer`."""
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(r) for r in self.layers])


def _spec(cfg: GPTQConfig, bits: int) -> GridSpec:
    return GridSpec(bits, cfg.granularity, cfg.group_size, cfg.static, cfg.range_method)


def gptq_layer(
    layer: nn.Module, hessian: torch.Tensor, bits: int, config: GPTQConfig | None = None,
    name: str = "layer",
) -> IntegerWeight:
    """GPTQ of one ``Linear`` / ``Conv2d`` weight against ``hessian`` ``(G, K, K)`` (from
    :class:`~mixquant_lite.gptq_core.HessianAccumulator`); the layer is not modified.

    A convolution with ``G`` groups is ``G`` independent GPTQ problems (rows of group ``i``
    see only its input channels); per tensor, one grid (from the whole weight, dead columns
    zeroed) is shared by all of them.
    """
    cfg = config or GPTQConfig()
    bits = check_bits(bits, f"bits of layer {name!r}")
    w = weight_of(layer)
    if cfg.granularity == "per_group":
        check_group_size(cfg.group_size, w[0].numel(), f"layer {name!r}")
    mat = layer_matrix(w)
    n_g = hessian.shape[0]
    rows = mat.shape[0] // n_g
    spec = _spec(cfg, bits)
    shared = None
    if cfg.granularity == "per_tensor":
        dead = torch.stack([torch.diag(hessian[i]) == 0 for i in range(n_g)])[:, None, :]
        zeroed = mat.reshape(n_g, rows, -1).masked_fill(dead, 0.0)
        s, z = choose_qparams(zeroed, bits, "per_tensor", cfg.range_method)
        shared = (s.expand(rows), z.expand(rows))
    parts = [
        gptq_weight(mat[i * rows:(i + 1) * rows], hessian[i], spec, block_size=cfg.block_size,
                    percdamp=cfg.percdamp, act_order=cfg.act_order, grid=shared)
        for i in range(n_g)
    ]
    codes = torch.cat([p[0] for p in parts]).reshape(w.shape)
    scale = torch.cat([p[1] for p in parts])
    zp = torch.cat([p[2] for p in parts]).round().to(torch.int32)
    if cfg.granularity == "per_tensor":
        scale, zp = scale[0, 0], zp[0, 0]
    elif cfg.granularity == "per_channel":
        scale, zp = scale[:, 0], zp[:, 0]
    dtype = torch.uint8 if bits <= 8 else torch.int32
    return IntegerWeight(codes.to(dtype), scale.contiguous(), zp.contiguous(), bits, w.dtype)


# ----------------------------------------------------------------------------- the model driver


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def _batches(calib_batches: Any) -> list[Any]:
    """The calibration batches as a list (a tensor is one batch; ``(x, y)`` pairs keep ``x``;
    dicts are passed as keyword arguments)."""
    if isinstance(calib_batches, torch.Tensor):
        out: list[Any] = [calib_batches]
    elif isinstance(calib_batches, (Mapping, Iterable)) and not isinstance(calib_batches, str):
        out = [calib_batches] if isinstance(calib_batches, Mapping) else list(calib_batches)
        out = [b[0] if isinstance(b, (tuple, list)) else b for b in out]
    else:
        raise TypeError("calib_batches must be a tensor, or an iterable of tensors, (x, y) "
                        f"pairs or dicts of model inputs, got {type(calib_batches).__name__}")
    if not out:
        raise ValueError("calib_batches yielded no batch")
    for b in out:
        if not isinstance(b, (torch.Tensor, Mapping)):
            raise TypeError(f"a calibration batch must be a tensor or a dict, got "
                            f"{type(b).__name__}")
    return out


def _forward(model: nn.Module, batch: Any) -> None:
    try:
        model(**batch) if isinstance(batch, Mapping) else model(batch)
    except _Stop:
        pass


def _resolve_plan(plan: Any, names: list[str]) -> dict[str, int]:
    """``{layer: bits}``: an int for every layer, or a mapping / an object with a ``.bits``
    mapping (a ``BitPlan``) naming the layers to quantize; layers it omits stay float."""
    if isinstance(plan, numbers.Integral) and not isinstance(plan, bool):
        return dict.fromkeys(names, check_bits(plan, "plan"))
    mapping = plan if isinstance(plan, Mapping) else getattr(plan, "bits", None)
    if not isinstance(mapping, Mapping):
        raise TypeError("plan must be an int, a dict {layer: bits} or a BitPlan, got "
                        f"{type(plan).__name__}")
    unknown = [k for k in mapping if k not in set(names)]
    if unknown:
        raise ValueError(f"the plan names layers the model lacks: {unknown[:5]}; the model's "
                         f"Conv2d/Linear layers are {names[:5]}{' ...' if len(names) > 5 else ''}")
    return {k: check_bits(mapping[k], f"bits of layer {k!r}") for k in names if k in mapping}


def _execution_order(model: nn.Module, named: list[tuple[str, nn.Module]], batch: Any) -> list:
    """Names of the layers in the order a forward pass first calls them (unreached: absent)."""
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, n=n: None if n in seen else
                                         seen.append(n)) for n, m in named]
    try:
        with torch.no_grad():
            _forward(model, batch)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _capture(model: nn.Module, layer: nn.Module, acc: HessianAccumulator, batches: list) -> None:
    """Accumulate ``layer``'s inputs over all batches (each forward stops at the layer)."""
    def hook(_m: nn.Module, args: tuple) -> None:
        acc.add(args[0])
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                _forward(model, b)
    finally:
        handle.remove()


def _rtn(layer: nn.Module, bits: int, cfg: GPTQConfig) -> IntegerWeight:
    """Round-to-nearest on the same grid settings (layers no calibration input reaches)."""
    w = weight_of(layer).detach()
    s, z = choose_qparams(w.float(), bits, cfg.granularity, cfg.range_method, cfg.group_size)
    return IntegerWeight(quantize_affine(w.float(), s, z, bits), s, z.to(torch.int32), bits,
                         w.dtype)


def _quantize_layer(
    model: nn.Module, name: str, layer: nn.Module, bits: int, cfg: GPTQConfig, batches: list,
) -> tuple[GPTQLayer, IntegerWeight]:
    """Capture ``layer``'s inputs in ``model`` over ``batches``, run GPTQ (round to nearest if
    nothing reached it), write the quantized weight into ``layer`` and report it."""
    t = time.perf_counter()
    acc = HessianAccumulator(layer, name)
    _capture(model, layer, acc, batches)
    h = acc.hessian()
    t_solve = time.perf_counter()
    qw = gptq_layer(layer, h, bits, cfg, name) if acc.n else _rtn(layer, bits, cfg)
    t_solve = time.perf_counter() - t_solve
    w = weight_of(layer)
    w_hat = qw.dequantize().reshape(w.shape)
    rtn = _rtn(layer, bits, cfg).dequantize().reshape(w.shape)
    err, rtn_err = output_error(w, w_hat, h), output_error(w, rtn, h)
    with torch.no_grad():
        w.copy_(w_hat.to(w.dtype))
    row = GPTQLayer(name, bits, acc.n, err, rtn_err, acc.n > 0, time.perf_counter() - t, t_solve)
    return row, qw


def _config_for(plan: Any, config: GPTQConfig | None) -> GPTQConfig:
    """``config`` checked against a ``BitPlan``'s spec, or built from it when ``None``."""
    spec = getattr(plan, "spec", None)
    if config is None:
        if not isinstance(spec, QuantSpec):
            return GPTQConfig()
        return GPTQConfig(granularity=spec.granularity, group_size=spec.group_size,
                          range_method=spec.range_method)
    if not isinstance(config, GPTQConfig):
        raise TypeError(f"config must be a GPTQConfig, got {type(config).__name__}")
    if isinstance(spec, QuantSpec) and config.spec != spec:
        raise ValueError(f"config's grid {config.spec} differs from the plan's spec {spec}: "
                         "pass a config with the plan's granularity, group_size and range_method")
    return config


def gptq(
    model: nn.Module, calib_batches: Any, plan: Any, config: GPTQConfig | None = None,
) -> tuple[nn.Module, GPTQReport]:
    """GPTQ of ``model``'s ``Conv2d`` / ``Linear`` weights at the plan's bit-widths.

    Args:
        model: a float model (not modified; a deep copy is quantized and returned in eval mode).
        calib_batches: a tensor (one batch), or an iterable of tensors, ``(x, y)`` pairs or dicts
            of keyword inputs (e.g. a tokenizer's output); all are used, each a forward pass.
        plan: an int (every layer at that bit-width), a dict ``{layer: bits}``, or a
            ``BitPlan`` (its ``.bits`` and its grid ``.spec``). Layers the plan omits stay
            float (the plan's fixed layers, e.g. first/last at 8 bits, are quantized at their
            planned bits).
        config: a :class:`GPTQConfig` (default: per channel, block 128, 1% damping; for a
            ``BitPlan``, its spec's grid). With a ``BitPlan`` its grid fields must equal
            ``plan.spec`` (the plan says how its weights are stored).

    Returns:
        ``(quantized_model, report)``: the model's planned weights are
        ``report.weights[name].dequantize()`` exactly (cast to the weight's dtype).

    Raises:
        TypeError / ValueError: bad plan, config or batches, a group size that does not divide
            a planned layer's input dimension, a non-positive-definite damped Hessian.
    """
    t0 = time.perf_counter()
    cfg = _config_for(plan, config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    named = quantizable_layers(out)
    if not named:
        raise ValueError("the model has no Conv2d or Linear layer to quantize")
    bits = _resolve_plan(plan, [n for n, _ in named])
    shapes = {n: tuple(weight_of(m).shape) for n, m in named if n in bits}
    batches = _batches(calib_batches)
    order = _execution_order(out, named, batches[0])
    modules = dict(named)
    todo = [n for n in order if n in bits] + [n for n, _ in named if n in bits and n not in order]
    results, weights = [], {}
    for name in todo:
        row, weights[name] = _quantize_layer(out, name, modules[name], bits[name],
                                             cfg.for_shape(shapes[name]),
                                             batches if name in order else [])
        results.append(row)
    report = GPTQReport(
        results, weights, shapes, cfg, time.perf_counter() - t0,
        [n for n, _ in named if n not in bits], [n for n in todo if not cfg.spec.fits(shapes[n])],
    )
    return out, report
