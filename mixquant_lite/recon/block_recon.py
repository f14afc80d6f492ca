"""Block and layer reconstruction (the BRECQ loop).

The model is cut into *units*, reconstructed one after another in execution order:

- every module of a registered block type (:mod:`mixquant_lite.layers`: torchvision's
  ``BasicBlock`` / ``Bottleneck``, so every block of our ResNet-20 and of ``torchvision.models.
  resnet*``, and MobileNetV2's ``InvertedResidual``; add your own with
  :func:`~mixquant_lite.layers.register_block`) is one unit, reconstructed block-wise: its output
  must match the full-precision block's output;
- every other ``Conv2d`` / ``Linear`` (the stem ``conv1``, the classifier ``fc``, or every layer
  of a model we know no blocks for) is a unit of its own, reconstructed layer-wise on its output.

Inputs and targets (BRECQ's asymmetric reconstruction): the unit's *input* is what the
already-quantized preceding units produce for the calibration images, the *target* is the
full-precision model's output of that unit for the same images. Both are computed once per unit
for the whole calibration set and cached on the model's device.

Loss per iteration (mini-batch of ``batch_size`` cached samples, drawn with a seeded generator):

    sum over channels, mean over batch and positions of (out - target)^2
      + reg_weight * sum over the unit's weights of (1 - |2 h(V) - 1|^beta)

with no regulariser during the first ``warmup`` fraction of the iterations and ``beta`` decaying
linearly from 20 to 2 over the rest (:class:`LinearTempDecay`). The rounding variables are trained
with Adam (lr 1e-3); activation step sizes, when activations are quantized, with Adam (lr 4e-4,
cosine-annealed) **jointly** in the same loop. (BRECQ runs the activation steps in a second pass
after all weights; joint training halves the run time and is our choice.)
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..layers import QUANTIZABLE_TYPES, block_spec, is_quantizable, quantizable_layer_names
from .act_quant import ActQuantizer, quantize_input_hook
from .adaround import AdaRoundQuantizer
from .config import BrecqConfig

__all__ = [
    "QUANTIZABLE_TYPES",
    "Unit",
    "LinearTempDecay",
    "quantizable_layer_names",
    "find_units",
    "execution_order",
    "capture",
    "reconstruct_unit",
]


@dataclass
class Unit:
    """One reconstruction unit.

    Attributes:
        name: module path in the model (``"layer1.0"``, ``"conv1"``, ``"fc"``).
        kind: ``"block"`` or ``"layer"``.
        layers: ``(full_name, name_relative_to_unit)`` of its quantizable layers (the relative name
            of a layer unit is ``""``).
    """

    name: str
    kind: str
    layers: list[tuple[str, str]] = field(default_factory=list)


def find_units(model: nn.Module) -> list[Unit]:
    """Units in registration order: known residual blocks whole, every other layer on its own."""
    units: list[Unit] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if block_spec(child) is not None:
                layers = [(f"{full}.{n}", n) for n in quantizable_layer_names(child)]
                units.append(Unit(full, "block", layers))
            elif is_quantizable(child):
                units.append(Unit(full, "layer", [(full, "")]))
            else:
                walk(child, f"{full}.")

    walk(model, "")
    return units


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the wanted tensor is captured."""


@torch.no_grad()
def execution_order(model: nn.Module, units: list[Unit], x: torch.Tensor) -> list[Unit]:
    """``units`` sorted by when the forward pass on ``x`` first reaches them.

    Units never reached are dropped (the caller quantizes them without reconstruction).
    """
    modules = dict(model.named_modules())
    order: dict[str, int] = {}
    handles = []
    for u in units:
        def hook(_m, _a, name=u.name):
            order.setdefault(name, len(order))
        handles.append(modules[u.name].register_forward_pre_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return sorted((u for u in units if u.name in order), key=lambda u: order[u.name])


@torch.no_grad()
def capture(
    model: nn.Module, module: nn.Module, data: torch.Tensor, *, output: bool, chunk: int = 128
) -> torch.Tensor:
    """The input (``output=False``) or output of ``module`` when ``model`` runs on ``data``.

    The forward pass stops as soon as the tensor is seen. Returns ``(N, ...)`` on the model's
    device. The capturing pre-hook runs before any other (e.g. an input quantizer), so inputs are
    captured as they arrive.
    """
    store: list[torch.Tensor] = []

    def grab_in(_m, args):
        store.append(args[0].detach())
        raise _Stop

    def grab_out(_m, _args, out):
        store.append(out.detach())
        raise _Stop

    if output:
        handle = module.register_forward_hook(grab_out)
    else:
        handle = module.register_forward_pre_hook(grab_in, prepend=True)
    try:
        for x in data.split(chunk):
            try:
                model(x)
            except _Stop:
                pass
    finally:
        handle.remove()
    if len(store) != math.ceil(len(data) / chunk):
        name = module.__class__.__name__
        raise RuntimeError(f"module {name} was not reached in the forward pass")
    return torch.cat(store)


class LinearTempDecay:
    """Annealing of the regulariser's exponent ``beta`` (BRECQ/AdaRound schedule).

    ``beta = start`` during the first ``warmup * t_max`` iterations (where the regulariser is off),
    then decays linearly to ``end`` at ``t_max``.
    """

    def __init__(self, t_max: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0):
        self.t_max, self.start, self.end = t_max, start, end
        self.start_decay = warmup * t_max

    def __call__(self, t: int) -> float:
        if t < self.start_decay:
            return self.start
        rel = (t - self.start_decay) / max(self.t_max - self.start_decay, 1e-12)
        return self.end + (self.start - self.end) * max(0.0, 1.0 - rel)


def add_act_quantizers(
    unit_module: nn.Module, unit: Unit, bits_in: int | None, bits_mid: int | None
) -> list[ActQuantizer]:
    """Install input quantizers on a unit: on its own input (``bits_in``) and, in a block, on the
    inputs of the layers its :class:`~mixquant_lite.layers.BlockSpec` names as fed by an
    intermediate activation (``bits_mid``; e.g. ``conv2`` of a ``BasicBlock``). Returns them."""
    added = []
    if bits_in is not None:
        unit_module.input_quantizer = ActQuantizer(bits_in)
        unit_module.register_forward_pre_hook(quantize_input_hook)
        added.append(unit_module.input_quantizer)
    spec = block_spec(unit_module)
    if bits_mid is not None and unit.kind == "block" and spec is not None:
        for name in spec.mid_inputs(unit_module):
            layer = unit_module.get_submodule(name)
            layer.input_quantizer = ActQuantizer(bits_mid)
            layer.register_forward_pre_hook(quantize_input_hook)
            added.append(layer.input_quantizer)
    return added


def _rec_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels (dim 1), averaged over the rest (BRECQ's L2 loss).

    One fused kernel forward and backward (``mse_loss`` with ``reduction="sum"``, divided by the
    number of positions); its gradient equals that of ``(out - target).pow(2).sum(1).mean()``.
    """
    if out.dim() <= 1:
        return F.mse_loss(out, target)
    return F.mse_loss(out, target, reduction="sum") / (out.numel() // out.shape[1])


@torch.no_grad()
def _mse(
    unit_module: nn.Module, weights: dict[str, torch.Tensor], inputs: torch.Tensor,
    targets: torch.Tensor, chunk: int = 256,
) -> float:
    """Mean squared error per output element over all cached samples (float64 sum)."""
    total = 0.0
    for x, y in zip(inputs.split(chunk), targets.split(chunk), strict=True):
        out = functional_call(unit_module, weights, (x,))
        total += torch.sum((out.float() - y.float()).pow(2), dtype=torch.float64).item()
    return total / targets.numel()


def reconstruct_unit(
    unit_module: nn.Module,
    quantizers: dict[str, AdaRoundQuantizer],
    act_quantizers: list[ActQuantizer],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: BrecqConfig,
    *,
    iters: int | None = None,
    generator: torch.Generator,
    desc: str = "",
) -> tuple[float, float, str, float]:
    """Learn the rounding (and activation steps) of one unit; write hard-rounded weights back.
    Nine parameters: one unit's module, quantizers, data and loop settings, passed through.

    Args:
        unit_module: the block or layer, inside the model being quantized.
        quantizers: ``{"conv1.weight": AdaRoundQuantizer, ...}`` keyed by parameter path
            relative to ``unit_module`` (``"weight"`` for a layer unit).
        act_quantizers: the unit's (uninitialised) activation quantizers, or ``[]``.
        inputs, targets: cached ``(N, ...)`` unit inputs (from the quantized model) and
            full-precision outputs, on the model's device.
        config: the run's :class:`~mixquant_lite.recon.config.BrecqConfig` (batch size, loss
            and optimiser settings, ``keep_better``, ``progress``).
        iters: optimisation steps (default ``config.iters``); ``0`` keeps round-to-nearest.
        generator: seeds the mini-batch sampling.

    Returns:
        ``(loss_before, loss_after, rounding, loop_seconds)``: MSE per output element on all
        ``N`` samples with round-to-nearest weights (activation quantizers freshly initialised)
        and with the final hard rounding; ``rounding`` is ``"learned"``, ``"nearest"``
        (``iters=0``) or ``"nearest (fallback)"`` (``keep_better`` and learned rounding was
        worse); wall seconds of the optimisation loop.
    """
    iters = config.iters if iters is None else iters
    nearest = {k: q.nearest() for k, q in quantizers.items()}
    with torch.no_grad():  # initialise activation quantizers on the first activations they see
        functional_call(unit_module, nearest, (inputs[:256],))
    loss_before = _mse(unit_module, nearest, inputs, targets)
    t_loop = time.perf_counter()
    if iters > 0:
        _optimise(unit_module, quantizers, act_quantizers, inputs, targets, config, iters,
                  generator, desc)
    else:
        for q in quantizers.values():
            q.set_nearest()
    loop_seconds = time.perf_counter() - t_loop
    hard, loss_after, kept = _harden(unit_module, quantizers, inputs, targets, loss_before,
                                     "learned" if iters > 0 else "nearest", config.keep_better)
    params = dict(unit_module.named_parameters())
    with torch.no_grad():  # from now on the model holds the quantized unit
        for k, w in hard.items():
            params[k].copy_(w)
    return loss_before, loss_after, kept, loop_seconds


def _optimise(
    unit_module: nn.Module, quantizers: dict[str, AdaRoundQuantizer],
    act_quantizers: list[ActQuantizer], inputs: torch.Tensor, targets: torch.Tensor,
    config: BrecqConfig, iters: int, generator: torch.Generator, desc: str,
) -> None:
    """The BRECQ loop: Adam on the rounding variables (and activation steps) for ``iters``
    steps on mini-batches of the cached inputs/targets. Nine parameters: the state of
    :func:`reconstruct_unit`, passed through."""
    opt_w = torch.optim.Adam([q.alpha for q in quantizers.values()], lr=config.lr)
    opt_a = sched_a = None
    if act_quantizers:
        opt_a = torch.optim.Adam([a.delta for a in act_quantizers], lr=config.act_lr)
        sched_a = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, T_max=iters, eta_min=0.0)
    decay = LinearTempDecay(iters, config.warmup, *config.beta)
    n, dev = len(inputs), inputs.device
    bar = tqdm(range(iters), desc=desc, disable=not config.progress, leave=False)
    qs = list(quantizers.items())
    with _weights_as_tensors(unit_module, list(quantizers)) as slots:
        for it in bar:
            idx = torch.randperm(n, generator=generator)[: config.batch_size].to(dev)
            hs = [q.h() for _, q in qs]  # once per step: for the weights and the regulariser
            for (layer, name), (_, q), h in zip(slots, qs, hs, strict=True):
                setattr(layer, name, q.soft_weight(h))
            rec = _rec_loss(unit_module(inputs[idx]), targets[idx])
            # The official BRECQ counter is incremented before use (t = 1 .. iters), so the
            # warm-up ends one step earlier and beta reaches exactly its end value at the end.
            t = it + 1
            loss = rec
            if t >= decay.start_decay:  # after the warm-up: reconstruction + regulariser
                b = decay(t)
                loss = rec + config.reg_weight * sum(
                    q.rounding_reg(b, h) for (_, q), h in zip(qs, hs, strict=True))
            opt_w.zero_grad(set_to_none=True)
            if opt_a is not None:
                opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_w.step()
            if opt_a is not None and sched_a is not None:
                opt_a.step()
                sched_a.step()
            if config.progress and (it % 100 == 0 or it == iters - 1):
                bar.set_postfix(rec=f"{rec.item():.4g}", loss=f"{loss.item():.4g}")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextmanager
def _weights_as_tensors(
    unit_module: nn.Module, keys: list[str]
) -> Iterator[list[tuple[nn.Module, str]]]:
    """Within the block, the parameters ``keys`` (``"conv1.weight"`` relative to
    ``unit_module``) are plain attributes the caller sets to a tensor each step (what
    ``functional_call`` does, without its per-call bookkeeping); restored on exit.
    Yields ``[(layer, attribute name)]`` in the order of ``keys``."""
    slots, saved = [], []
    for key in keys:
        path, _, name = key.rpartition(".")
        layer = unit_module.get_submodule(path) if path else unit_module
        saved.append(layer._parameters.pop(name))
        slots.append((layer, name))
    try:
        yield slots
    finally:
        for (layer, name), param in zip(slots, saved, strict=True):
            layer.__dict__.pop(name, None)
            layer._parameters[name] = param


def _harden(
    unit_module: nn.Module, quantizers: dict[str, AdaRoundQuantizer], inputs: torch.Tensor,
    targets: torch.Tensor, loss_before: float, kept: str, keep_better: bool,
) -> tuple[dict[str, torch.Tensor], float, str]:
    """Hard rounding for good; with ``keep_better``, round-to-nearest instead when the learned
    rounding has the larger calibration MSE. Returns the weights, their MSE and the choice."""
    for q in quantizers.values():
        q.harden()
    hard = {k: q().detach() for k, q in quantizers.items()}
    loss_after = _mse(unit_module, hard, inputs, targets)
    if keep_better and loss_after > loss_before:
        # Too few iterations leave h(V) far from 0/1, and the hard rounding can then be worse
        # than round-to-nearest; never hand back a unit worse than RTN on the calibration data.
        for q in quantizers.values():
            q.set_nearest()
        hard = {k: q().detach() for k, q in quantizers.items()}
        loss_after, kept = _mse(unit_module, hard, inputs, targets), "nearest (fallback)"
    return hard, loss_after, kept
