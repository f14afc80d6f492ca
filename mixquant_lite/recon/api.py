"""``brecq(model, calib_data, plan_or_bits)``: BRECQ with per-layer bit-widths from a plan.

Example::

    from mixquant_lite import brecq, load_pretrained
    from mixquant_lite.data import calibration_batch

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
import math
import numbers
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..evaluate import model_device
from ..quant import check_bits
from .adaround import RANGE_METHODS, AdaRoundQuantizer
from .block_recon import (
    add_act_quantizers,
    capture,
    execution_order,
    find_units,
    quantizable_layer_names,
    reconstruct_unit,
)
from .folding import check_folding
from .folding import fold_bn as _fold_bn

__all__ = ["brecq", "BrecqReport", "UnitResult", "resolve_bits", "DEFAULTS"]

# The BRECQ recipe (Li et al. 2021, official code defaults).
DEFAULTS: dict[str, Any] = dict(
    iters=20000, n_calib=1024, batch_size=32, reg_weight=0.01, warmup=0.2, beta=(20.0, 2.0),
    lr=1e-3, act_lr=4e-4, first_last_bits=8, weight_range="mse",
)


@dataclass
class UnitResult:
    """Reconstruction of one unit.

    ``loss_before`` / ``loss_after``: mean squared error per output element of the unit on the
    calibration set (units of the activation squared), round-to-nearest vs learned rounding, both
    with the quantized preceding units feeding it. ``weight_bits``: its layers' bit-widths,
    comma-separated in layer order. ``rounding``: ``"learned"`` (AdaRound), ``"nearest"``
    (``iters=0``) or ``"nearest (fallback)"`` (learned rounding was worse on calibration data).
    ``it_per_s``: optimisation steps per second (NaN for ``iters=0``); ``seconds``: wall time of
    the unit including its input/target capture.
    """

    name: str
    kind: str
    layers: tuple[str, ...]
    weight_bits: str
    act_bits: int | None
    iters: int
    loss_before: float
    loss_after: float
    rounding: str
    it_per_s: float
    seconds: float


@dataclass
class BrecqReport:
    """What :func:`brecq` did: per unit results, the bit-widths used and the settings."""

    units: list[UnitResult]
    bits: dict[str, int]
    numel: dict[str, int]
    act_bits: int | None
    settings: dict[str, Any]
    seconds: float
    not_reconstructed: list[str] = field(default_factory=list)

    @property
    def avg_bits(self) -> float:
        """Average weight bit-width, weighted by each layer's number of weights."""
        total = sum(self.numel.values())
        return sum(self.bits[k] * self.numel[k] for k in self.bits) / total

    @property
    def size_bytes(self) -> float:
        """Weight storage: sum of numel * bits / 8 (biases not counted)."""
        return sum(self.bits[k] * self.numel[k] for k in self.bits) / 8

    def to_frame(self):
        """One row per unit (pandas DataFrame) with the fields of :class:`UnitResult`."""
        import pandas as pd

        rows = [asdict(u) for u in self.units]
        for r in rows:
            r["layers"] = ", ".join(r["layers"])
        frame = pd.DataFrame(rows, columns=list(UnitResult.__dataclass_fields__))
        frame["act_bits"] = frame["act_bits"].astype("Int64")  # None stays <NA>, not NaN
        return frame

    def __str__(self) -> str:
        head = (
            f"BRECQ: {len(self.units)} units, avg weight bits {self.avg_bits:.3f}, "
            f"act bits {self.act_bits}, {self.seconds:.1f} s"
        )
        cols = ["name", "kind", "weight_bits", "act_bits", "loss_before", "loss_after", "rounding",
                "seconds"]
        return head + "\n" + self.to_frame()[cols].to_string(index=False)


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


def brecq(
    model: nn.Module,
    calib_data: Any,
    plan_or_bits: Any,
    *,
    act_bits: int | None = None,
    iters: int = DEFAULTS["iters"],
    n_calib: int = DEFAULTS["n_calib"],
    batch_size: int = DEFAULTS["batch_size"],
    seed: int = 0,
    first_last_bits: int | None = DEFAULTS["first_last_bits"],
    per_channel: bool | None = None,
    weight_range: str = DEFAULTS["weight_range"],
    fold_bn: bool = True,
    reg_weight: float = DEFAULTS["reg_weight"],
    warmup: float = DEFAULTS["warmup"],
    beta: tuple[float, float] = DEFAULTS["beta"],
    lr: float = DEFAULTS["lr"],
    act_lr: float = DEFAULTS["act_lr"],
    keep_better: bool = True,
    reconstruct_first: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, BrecqReport]:
    """Post-training quantization with BRECQ (block reconstruction + AdaRound).

    Args:
        model: a float model; ResNet blocks (torchvision ``BasicBlock``/``Bottleneck``, which our
            ResNet-20 uses) are reconstructed block-wise, every other ``Conv2d``/``Linear``
            layer-wise. Not modified.
        calib_data: calibration images, a tensor ``(N, C, H, W)`` or an iterable of batches
            (tensors or ``(x, y)``); the first ``n_calib`` samples are used.
        plan_or_bits: weight bit-widths: an int (uniform), a dict ``{layer: bits}`` covering every
            ``Conv2d``/``Linear`` by module path, or any object with such a ``.bits`` dict (a
            ``BitPlan``). With ``fold_bn`` the plan should come from the folded model's QE.
        act_bits: activation bit-width, or ``None`` for float activations. Every quantized
            layer's input is quantized (per tensor, asymmetric, learned step) except the image
            fed to the first layer; with ``first_last_bits`` the first layer's output and the last
            layer's input use that bit-width.
        iters: optimisation steps per unit (recipe: 20,000); 0 = round-to-nearest on the grid.
        n_calib: calibration samples (recipe: 1,024); fewer available is an error.
        batch_size: samples per step (recipe: 32).
        seed: seeds the mini-batch sampling; runs on CPU are deterministic.
        first_last_bits: bit-width forced on the first and last quantizable layers (in execution
            order) as in the BRECQ recipe; ``None`` keeps the plan's.
        per_channel: one grid per output channel instead of per tensor; ``None`` takes the
            plan's ``per_channel`` attribute when it has one (a ``BitPlan``), else per tensor.
        weight_range: ``"mse"`` (recipe: range shrunk to minimise the L2.4 error) or
            ``"minmax"`` (the QE table's range).
        fold_bn: fold BatchNorm into the preceding convolutions first (the recipe; quantizing
            what a deployed model computes with).
        reg_weight, warmup, beta, lr, act_lr: regulariser weight (0.01), warm-up fraction without
            regulariser (0.2), beta annealing start/end (20, 2), Adam lr for the rounding
            variables (1e-3) and for activation steps (4e-4). Adam moves each rounding variable
            by about ``lr`` per step and ``h(V)`` only reaches 0/1 at ``|V| ~ 2.4``, so runs with
            far fewer iterations than the recipe converge better with a larger ``lr``.
        keep_better: per unit, fall back to round-to-nearest if the learned rounding has the
            larger calibration MSE (reported in ``UnitResult.rounding``).
        reconstruct_first: with ``first_last_bits`` set, also reconstruct the first unit when
            it is a single layer (the stem). The official BRECQ code never does
            (``set_first_last_layer_to_8bit`` sets ``ignore_reconstruction`` on the first
            layer): it is rounded to nearest on its (MSE-range) ``first_last_bits`` grid, which
            is the default here too (reported as ``"nearest"`` with ``iters=0``).
        progress: a tqdm bar per unit.

    Returns:
        ``(quantized_model, report)``; see :class:`BrecqReport`.

    Raises:
        ValueError / TypeError: bad plan, bits out of range, too little calibration data, a model
            without quantizable layers, bad settings.
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = quantizable_layer_names(model)
    if not names:
        raise ValueError("the model has no Conv2d or Linear layer to quantize")
    checks = (("iters", iters, 0), ("n_calib", n_calib, 1), ("batch_size", batch_size, 1))
    for arg, val, lo in checks:
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{arg} must be an int >= {lo}, got {val!r}")
    if batch_size > n_calib:
        raise ValueError(f"batch_size={batch_size} exceeds n_calib={n_calib}")
    if act_bits is not None:
        act_bits = check_bits(act_bits, "act_bits")
    if first_last_bits is not None:
        first_last_bits = check_bits(first_last_bits, "first_last_bits")
    if weight_range not in RANGE_METHODS:
        raise ValueError(f"weight_range must be one of {RANGE_METHODS}, got {weight_range!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be in [0, 1), got {warmup}")
    if not (reg_weight >= 0 and lr > 0 and act_lr > 0 and min(beta) > 0):
        raise ValueError("reg_weight must be >= 0 and lr, act_lr and beta positive")
    bits = resolve_bits(plan_or_bits, names)
    if per_channel is None:
        per_channel = bool(getattr(plan_or_bits, "per_channel", False))

    device = model_device(model)
    dtype = next(model.parameters()).dtype
    x = _calibration_tensor(calib_data, n_calib).to(device=device, dtype=dtype)

    # Full-precision reference (folded) and the working copy that becomes the quantized model.
    fp = _fold_bn(model) if fold_bn else copy.deepcopy(model).eval()
    if fold_bn:
        check_folding(model, fp, x[: min(len(x), 64)])
    fp.requires_grad_(False)
    work = copy.deepcopy(fp)
    modules = dict(work.named_modules())
    fp_modules = dict(fp.named_modules())

    units = execution_order(work, find_units(work), x[:2])
    reached = {n for u in units for n, _ in u.layers}
    not_reached = [n for n in names if n not in reached]
    first_layer, last_layer = units[0].layers[0][0], units[-1].layers[-1][0]
    if first_last_bits is not None:
        changed = [k for k in (first_layer, last_layer) if bits[k] != first_last_bits]
        if changed and not isinstance(plan_or_bits, numbers.Integral):
            warnings.warn(
                f"first/last layers {changed} set to {first_last_bits} bits "
                "(first_last_bits; pass None to keep the plan's)",
                stacklevel=2,
            )
        bits[first_layer] = bits[last_layer] = first_last_bits
    # Layers the forward pass never reaches: round-to-nearest on their grid, no reconstruction.
    with torch.no_grad():
        for n in not_reached:
            q = AdaRoundQuantizer(modules[n].weight, bits[n], per_channel=per_channel,
                                  range_method=weight_range)
            modules[n].weight.copy_(q.nearest())

    gen = torch.Generator().manual_seed(seed)
    results: list[UnitResult] = []
    for i, unit in enumerate(units):
        t_unit = time.perf_counter()
        target = capture(fp, fp_modules[unit.name], x, output=True)
        inputs = capture(work, modules[unit.name], x, output=False)
        module = modules[unit.name]
        quantizers = {
            (f"{rel}.weight" if rel else "weight"): AdaRoundQuantizer(
                modules[full].weight, bits[full], per_channel=per_channel,
                range_method=weight_range,
            ).to(device)
            for full, rel in unit.layers
        }
        acts, bits_in = [], None
        if act_bits is not None:
            if i == 0:
                bits_in = None  # the image itself stays float, as in BRECQ
            elif first_last_bits is not None and (i == 1 or i == len(units) - 1):
                bits_in = first_last_bits  # first layer's output / last layer's input
            else:
                bits_in = act_bits
            acts = [a.to(device) for a in add_act_quantizers(module, unit, bits_in, act_bits)]
        # The official code leaves the stem (first unit when it is a single layer) un-reconstructed.
        # Tied to first_last_bits as in the official code (set_first_last_layer_to_8bit).
        skip = (i == 0 and unit.kind != "block" and first_last_bits is not None
                and not reconstruct_first)
        unit_iters = 0 if skip else iters
        before, after, rounding, loop_s = reconstruct_unit(
            module, quantizers, acts, inputs, target, iters=unit_iters, batch_size=batch_size,
            generator=gen, reg_weight=reg_weight, warmup=warmup, beta=beta, lr=lr,
            act_lr=act_lr, keep_better=keep_better, desc=f"BRECQ {unit.name}",
            progress=progress,
        )
        for a in acts:
            a.delta.requires_grad_(False)
        del target, inputs
        results.append(
            UnitResult(
                name=unit.name, kind=unit.kind, layers=tuple(n for n, _ in unit.layers),
                weight_bits=",".join(str(bits[n]) for n, _ in unit.layers),
                act_bits=bits_in if act_bits is not None else None, iters=unit_iters,
                loss_before=before, loss_after=after, rounding=rounding,
                it_per_s=unit_iters / loop_s if unit_iters else math.nan,
                seconds=time.perf_counter() - t_unit,
            )
        )
    work.eval()
    settings = dict(
        iters=iters, n_calib=n_calib, batch_size=batch_size, seed=seed,
        first_last_bits=first_last_bits, per_channel=per_channel, weight_range=weight_range,
        fold_bn=fold_bn, reg_weight=reg_weight, warmup=warmup, beta=tuple(beta), lr=lr,
        act_lr=act_lr, keep_better=keep_better, reconstruct_first=reconstruct_first,
        device=str(device),
    )
    report = BrecqReport(
        units=results, bits=bits, numel={n: modules[n].weight.numel() for n in names},
        act_bits=act_bits, settings=settings, seconds=time.perf_counter() - t0,
        not_reconstructed=not_reached,
    )
    assert math.isfinite(report.avg_bits)
    return work, report

