"""``brecq(model, calib_data, plan_or_bits)``: BRECQ with per-layer bit-widths from a plan.

Example::

    from mixquant_lite import brecq
    from mixquant_lite.zoo.models import load_pretrained
    from mixquant_lite.zoo.data import calibration_batch

    model = load_pretrained("resnet20-mnist5k")
    qmodel, report = brecq(model, calibration_batch(1024), 3)        # W3, activations in f32
    qmodel, report = brecq(model, calibration_batch(1024), plan, act_bits=8)
    print(report.to_frame())

The returned model is a BatchNorm-folded copy (see :mod:`.folding`) whose ``Conv2d`` / ``Linear``
weights are hard-rounded onto each layer's own ``b``-bit asymmetric grid, in ``eval()`` mode on the
caller's device. With ``act_bits`` it also carries ``input_quantizer`` submodules applied by forward
pre-hooks (it deep-copies and pickles). The caller's model is never modified.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..evaluation import model_device
from ..layers import first_last_layers, quantizable_layer_names, weight_name, weight_of
from ..plan import BitPlan
from ..qspec import IntegerWeight, QuantSpec
from ..quant import check_bits
from .adaround import AdaRoundQuantizer
from .block_recon import (
    Unit,
    add_act_quantizers,
    capture,
    execution_order,
    find_units,
    reconstruct_unit,
)
from .config import BrecqConfig
from .folding import check_folding
from .folding import fold_bn as _fold_bn
from .report import BrecqReport, UnitResult

__all__ = ["brecq", "BrecqConfig", "BrecqReport", "UnitResult", "resolve_bits"]

def resolve_bits(plan_or_bits: Any, layer_names: list[str]) -> dict[str, int]:
    """``{layer: bits}`` for every quantizable layer from an int, a mapping, or an object with a
    ``.bits`` mapping (e.g. :class:`mixquant_lite.plan.BitPlan`).

    Raises:
        TypeError: not one of those.
        ValueError: the plan names layers the model lacks, misses some, or has bits out of range.
    """
    if isinstance(plan_or_bits, numbers.Integral) and not isinstance(plan_or_bits, bool):
        bits = check_bits(plan_or_bits, "bits")
        return dict.fromkeys(layer_names, bits)
    mapping = plan_or_bits if isinstance(plan_or_bits, Mapping) else getattr(
        plan_or_bits, "bits", None
    )
    if not isinstance(mapping, Mapping):
        raise TypeError(
            "plan_or_bits must be an int (uniform bit-width), a dict {layer: bits} or a plan with "
            f"a .bits dict, got {type(plan_or_bits).__name__}"
        )
    unknown = [k for k in mapping if k not in set(layer_names)]
    if unknown:
        raise ValueError(
            f"the plan names layers the model lacks: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; the model's quantizable layers are "
            f"{layer_names[:5]}{' ...' if len(layer_names) > 5 else ''}"
        )
    missing = [k for k in layer_names if k not in mapping]
    if missing:
        raise ValueError(f"the plan has no bit-width for layers {missing[:5]}")
    return {k: check_bits(mapping[k], f"bits of layer {k!r}") for k in layer_names}


def _calibration_tensor(calib_data: Any, n: int) -> torch.Tensor:
    """The first ``n`` samples of a tensor, or of an iterable of tensors / ``(x, y)`` batches."""
    if isinstance(calib_data, torch.Tensor):
        x = calib_data
    elif isinstance(calib_data, Iterable):
        parts, have = [], 0
        for batch in calib_data:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not isinstance(xb, torch.Tensor):
                raise TypeError(f"calibration batches must be tensors, got {type(xb).__name__}")
            parts.append(xb)
            have += len(xb)
            if have >= n:
                break
        if not parts:
            raise ValueError("too little calibration data: calib_data yielded no samples")
        x = torch.cat(parts)
    else:
        raise TypeError(
            "calib_data must be a tensor (N, ...) or an iterable of batches, "
            f"got {type(calib_data).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(f"calibration data must be floating point, got {x.dtype}")
    if len(x) < n:
        raise ValueError(
            f"too little calibration data: {len(x)} samples, n_calib={n} (the BRECQ recipe "
            f"uses 1024); pass more samples or a smaller n_calib"
        )
    return x[:n]


def _make_config(config: BrecqConfig | None, overrides: dict[str, Any]) -> BrecqConfig:
    """``config`` (default: the recipe) with keyword ``overrides`` applied and validated."""
    if config is not None and not isinstance(config, BrecqConfig):
        raise TypeError(f"config must be a BrecqConfig, got {type(config).__name__}")
    unknown = sorted(set(overrides) - set(BrecqConfig.field_names()))
    if unknown:
        raise TypeError(f"brecq() got unknown settings {unknown}; BrecqConfig fields are "
                        f"{list(BrecqConfig.field_names())}")
    return dataclasses.replace(config or BrecqConfig(), **overrides)


def plan_bits(
    plan_or_bits: Any, names: list[str], first_last_bits: int | None
) -> dict[str, int]:
    """Bit-widths per layer for BRECQ: :func:`resolve_bits`, with the first and last layer
    (module order) at ``first_last_bits`` for an int; a plan is used as it is and must already
    hold ``first_last_bits`` there.

    Raises:
        ValueError: a plan whose first or last layer differs from ``first_last_bits``.
    """
    bits = resolve_bits(plan_or_bits, names)
    if first_last_bits is None:
        return bits
    first, last = first_last_layers(names)
    if isinstance(plan_or_bits, numbers.Integral):
        bits[first] = bits[last] = first_last_bits
        return bits
    wrong = {k: bits[k] for k in (first, last) if bits[k] != first_last_bits}
    if wrong:
        raise ValueError(
            f"the plan has first/last layers {wrong}, but first_last_bits={first_last_bits}: "
            f"build the plan with fixed={{{first!r}: {first_last_bits}, {last!r}: "
            f"{first_last_bits}}} (e.g. mixquant(table, qem, fixed=...)), or pass "
            "first_last_bits=None to use the plan as it is"
        )
    return bits


def brecq(
    model: nn.Module,
    calib_data: Any,
    plan_or_bits: Any,
    config: BrecqConfig | None = None,
    **settings: Any,
) -> tuple[nn.Module, BrecqReport]:
    """Post-training quantization with BRECQ (block reconstruction + AdaRound).

    Args:
        model: a float model; blocks of a registered type (:mod:`mixquant_lite.layers`:
            torchvision ``BasicBlock``/``Bottleneck``/``InvertedResidual``) are reconstructed
            block-wise, every other ``Conv2d``/``Linear`` layer-wise. Not modified.
        calib_data: calibration images, a tensor ``(N, C, H, W)`` or an iterable of batches
            (tensors or ``(x, y)``); the first ``config.n_calib`` samples are used.
        plan_or_bits: weight bit-widths: an int (uniform; first/last layer at
            ``first_last_bits``), a dict ``{layer: bits}`` covering every ``Conv2d``/``Linear``
            by module path, or any object with such a ``.bits`` mapping (a ``BitPlan``). A plan
            is never rewritten: with ``first_last_bits`` set it must hold that bit-width at the
            first and last layer (build it with ``fixed=``). With BatchNorm folding the plan
            should come from the folded model's QE table.
        config: a :class:`BrecqConfig` (default: the BRECQ recipe).
        **settings: fields of :class:`BrecqConfig` overriding ``config`` (``act_bits=8``,
            ``iters=2000``...).

    Returns:
        ``(quantized_model, report)``; see :class:`BrecqReport` (``report.config`` is the
        config that ran).

    Raises:
        ValueError / TypeError: bad plan, bits out of range, too little calibration data, a model
            without quantizable layers, bad or unknown settings.
    """
    t0 = time.perf_counter()
    cfg = _make_config(config, dict(settings))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = quantizable_layer_names(model)
    if not names:
        raise ValueError("the model has no Conv2d or Linear layer to quantize")
    bits = plan_bits(plan_or_bits, names, cfg.first_last_bits)
    per_channel = cfg.per_channel
    if per_channel is None:
        per_channel = bool(getattr(plan_or_bits, "per_channel", False))
    cfg = dataclasses.replace(cfg, per_channel=per_channel)

    device = model_device(model)
    dtype = next(model.parameters()).dtype
    x = _calibration_tensor(calib_data, cfg.n_calib).to(device=device, dtype=dtype)
    fp, work = _reference_and_working_copy(model, x, cfg.fold_batchnorm)
    units = execution_order(work, find_units(work), x[:2])
    reached = {n for u in units for n, _ in u.layers}
    not_reached = [n for n in names if n not in reached]
    weights: dict[str, IntegerWeight] = {}
    _round_unreached(work, not_reached, bits, cfg, weights)

    gen = torch.Generator().manual_seed(cfg.seed)
    first, last = first_last_layers(names)
    results = [
        _reconstruct(fp, work, units, i, x, bits, cfg, gen, (first, last), weights)
        for i in range(len(units))
    ]
    work.eval()
    numel = {n: weight_of(work, n).numel() for n in names}
    report = BrecqReport(
        units=results, bits=bits, numel=numel,
        act_bits=cfg.act_bits, settings={**cfg.to_dict(), "device": str(device)},
        seconds=time.perf_counter() - t0, not_reconstructed=not_reached, config=cfg,
        plan=_used_plan(plan_or_bits, bits, numel, cfg),
        weights={n: weights[n] for n in names},
    )
    return work, report


def _used_plan(plan_or_bits: Any, bits: dict[str, int], numel: dict[str, int],
               cfg: BrecqConfig) -> BitPlan:
    """The plan BRECQ quantized with: the bit-widths, its granularity and weight range."""
    spec = QuantSpec("per_channel" if cfg.per_channel else "per_tensor", cfg.weight_range)
    meta = dict(getattr(plan_or_bits, "meta", {}) or {})
    fixed = dict(getattr(plan_or_bits, "fixed", {}) or {})
    if not fixed and cfg.first_last_bits is not None:
        first, last = first_last_layers(list(bits))
        fixed = {first: bits[first], last: bits[last]}
    return BitPlan(bits, numel, spec, {**meta, "quantizer": "BRECQ"}, fixed)


def _integer_weight(q: AdaRoundQuantizer) -> IntegerWeight:
    return IntegerWeight(q.integer().cpu(), q.scale.detach().cpu(), q.zero_point.detach().cpu(),
                         q.bits, q.out_dtype)


def _reference_and_working_copy(
    model: nn.Module, x: torch.Tensor, fold: bool
) -> tuple[nn.Module, nn.Module]:
    """The full-precision reference (BatchNorm folded when ``fold``) and a copy of it that
    becomes the quantized model; neither is the caller's model."""
    fp = _fold_bn(model) if fold else copy.deepcopy(model).eval()
    if fold:
        check_folding(model, fp, x[: min(len(x), 64)])
    fp.requires_grad_(False)
    return fp, copy.deepcopy(fp)


@torch.no_grad()
def _round_unreached(
    work: nn.Module, names: list[str], bits: dict[str, int], cfg: BrecqConfig,
    weights: dict[str, IntegerWeight],
) -> None:
    """Layers the forward pass never reaches: round-to-nearest on their grid, no reconstruction
    (their codes recorded in ``weights``)."""
    for n in names:
        w = weight_of(work, n)
        q = AdaRoundQuantizer(w, bits[n], per_channel=bool(cfg.per_channel),
                              range_method=cfg.weight_range)
        q.set_nearest()
        w.copy_(q.nearest())
        weights[n] = _integer_weight(q)


def _unit_act_bits(
    units: list[Unit], i: int, cfg: BrecqConfig, first: str, last: str
) -> int | None:
    """Bit-width of unit ``i``'s input: none for the image (the first unit run), the
    ``first_last_bits`` for the output of the first layer and the input of the last layer."""
    if cfg.act_bits is None or i == 0:
        return None
    i_first = next(j for j, u in enumerate(units) if first in (n for n, _ in u.layers))
    has_last = last in (n for n, _ in units[i].layers)
    if cfg.first_last_bits is not None and (i == i_first + 1 or has_last):
        return cfg.first_last_bits
    return cfg.act_bits


def _reconstruct(
    fp: nn.Module, work: nn.Module, units: list[Unit], i: int, x: torch.Tensor,
    bits: dict[str, int], cfg: BrecqConfig, gen: torch.Generator, first_last: tuple[str, str],
    weights: dict[str, IntegerWeight],
) -> UnitResult:
    """Reconstruct unit ``i`` of ``work`` against ``fp`` (weights written back, their codes
    into ``weights``) and report it. Ten parameters: the state of one step of :func:`brecq`'s
    loop, passed rather than bundled into a one-use object."""
    first, last = first_last
    t_unit = time.perf_counter()
    unit = units[i]
    module = work.get_submodule(unit.name)
    target = capture(fp, fp.get_submodule(unit.name), x, output=True)
    inputs = capture(work, module, x, output=False)
    keys = {full: (f"{rel}." if rel else "") + weight_name(work.get_submodule(full))
            for full, rel in unit.layers}  # parameter path inside the unit (MHA: in_proj_weight)
    quantizers = {
        keys[full]: AdaRoundQuantizer(
            weight_of(work, full), bits[full], per_channel=bool(cfg.per_channel),
            range_method=cfg.weight_range,
        ).to(x.device)
        for full, _ in unit.layers
    }
    bits_in = _unit_act_bits(units, i, cfg, first, last)
    acts = []
    if cfg.act_bits is not None:
        acts = [a.to(x.device) for a in add_act_quantizers(module, unit, bits_in, cfg.act_bits)]
    # The official code leaves the stem (the first layer, a unit of its own) un-reconstructed,
    # tied to first_last_bits as there (set_first_last_layer_to_8bit).
    skip = (unit.layers == [(first, "")] and cfg.first_last_bits is not None
            and not cfg.reconstruct_first)
    iters = 0 if skip else cfg.iters
    before, after, rounding, loop_s = reconstruct_unit(
        module, quantizers, acts, inputs, target, cfg, iters=iters, generator=gen,
        desc=f"BRECQ {unit.name}",
    )
    for a in acts:
        a.delta.requires_grad_(False)
    for full, _ in unit.layers:
        weights[full] = _integer_weight(quantizers[keys[full]])
    return UnitResult(
        name=unit.name, kind=unit.kind, layers=tuple(n for n, _ in unit.layers),
        weight_bits=",".join(str(bits[n]) for n, _ in unit.layers),
        act_bits=bits_in, iters=iters, loss_before=before, loss_after=after, rounding=rounding,
        it_per_s=iters / loop_s if iters else math.nan, seconds=time.perf_counter() - t_unit,
    )
