"""Sensitivity experiments: one layer at a time, random whole-model plans, searches compared at
equal budgets, the order in which MixQuant lowers layers."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..evaluation import accuracy_and_loss
from ..quant import check_bits, fake_quantize
from .helpers import get_layer, layer_names, numel_in, sq_error
from .stats import law_qe_ratio

__all__ = [
    "single_layer_sensitivity",
    "random_plans",
    "evaluate_plans",
    "compare_at_budgets",
    "lowering_order",
]


@torch.no_grad()
def single_layer_sensitivity(
    model: nn.Module,
    loader,
    bits: Iterable[int] = (2, 3, 4),
    *,
    layers: Sequence[str] | None = None,
    per_channel: bool = False,
) -> pd.DataFrame:
    """Quantize one layer at a time and measure the test accuracy that is lost.

    For every layer in ``layers`` (default: every Conv2d/Linear layer) and every bit-width in
    ``bits``, the layer's weight is replaced by its quantized copy (all other layers stay f32),
    the model is evaluated on ``loader``, and the weight is restored. ``model`` is not modified.

    Returns:
        One row per (layer, bits) with columns ``layer``, ``bits``, ``numel``, ``qe`` (mean squared
        weight error), ``weight_var`` (variance of the f32 weights), ``qe_norm`` (``qe`` /
        ``weight_var``: the error relative to the layer's own spread), ``accuracy`` and ``drop``
        (f32 accuracy minus ``accuracy``, as a fraction), ``loss`` (mean test cross-entropy, nats)
        and ``loss_increase`` (``loss`` minus the f32 loss). The f32 accuracy and loss are in
        ``df.attrs["fp_accuracy"]`` and ``df.attrs["fp_loss"]``.
    """
    bits = [check_bits(b) for b in bits]
    work = copy.deepcopy(model).eval()
    names = list(layers) if layers is not None else layer_names(work)
    for name in names:
        get_layer(work, name)  # unknown names fail here, with the list of known ones
    fp_accuracy, fp_loss = accuracy_and_loss(work, loader)
    rows = []
    for name in names:
        mod = get_layer(work, name)
        w0 = mod.weight.detach().clone()
        var = torch.var(w0.double(), unbiased=False).item()
        for b in bits:
            w_hat = fake_quantize(w0, b, per_channel=per_channel)
            qe = sq_error(w0, w_hat) / w0.numel()
            mod.weight.copy_(w_hat)
            try:
                acc, loss = accuracy_and_loss(work, loader)
            finally:
                mod.weight.copy_(w0)
            rows.append(
                dict(layer=name, bits=b, numel=w0.numel(), qe=qe, weight_var=var,
                     qe_norm=qe / var if var > 0 else float("nan"), accuracy=acc,
                     drop=fp_accuracy - acc, loss=loss, loss_increase=loss - fp_loss)
            )
    df = pd.DataFrame(rows)
    df.attrs["fp_accuracy"] = fp_accuracy
    df.attrs["fp_loss"] = fp_loss
    return df


def random_plans(
    layers: Sequence[str],
    n: int,
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
    seed: int = 0,
    spread: float = 1.5,
) -> list[dict[str, int]]:
    """``n`` random bit-width plans (``{layer: bits}``) spanning low to high average bit-widths.

    Plan ``i`` draws a centre ``c`` uniformly in ``[min(bits), max(bits)]``; each layer then gets
    the candidate nearest to ``c + spread * N(0, 1)``. So the plans range from aggressive (mostly
    2-3 bits) to nearly all-8-bit, and layers differ within a plan.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cands = np.array(sorted(check_bits(b) for b in bits))
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(n):
        c = rng.uniform(cands[0], cands[-1])
        want = c + spread * rng.standard_normal(len(layers))
        pick = np.abs(want[:, None] - cands[None, :]).argmin(1)
        plans.append({name: int(cands[j]) for name, j in zip(layers, pick, strict=True)})
    return plans


@torch.no_grad()
def evaluate_plans(
    model: nn.Module,
    loader,
    plans: Sequence[Mapping[str, int]],
    *,
    per_channel: bool = False,
) -> pd.DataFrame:
    """Apply each plan (round-to-nearest, per the plan) and measure accuracy and weight error.

    ``plans`` holds ``{layer: bits}`` dicts or :class:`~mixquant_lite.plan.BitPlan` objects (the
    same quantized weights as ``BitPlan.apply``). Layers missing from a plan stay f32. ``model`` is
    not modified.

    Returns:
        One row per plan: ``plan`` (index), ``avg_bits`` (weighted by each layer's weight count),
        ``size_bytes`` (``sum numel * bits / 8``), ``total_sq_error`` (``sum_l numel_l * QE_l``, the
        squared distance between the f32 and the quantized weights of the whole model),
        ``accuracy`` and ``loss`` (mean test cross-entropy, nats).
    """
    work = copy.deepcopy(model).eval()
    originals: dict[str, torch.Tensor] = {}
    rows = []
    seen: dict[tuple, tuple[float, float]] = {}
    for i, plan in enumerate(plans):
        plan = getattr(plan, "bits", plan)
        numel = bit_sum = 0
        sq = 0.0
        key = tuple(sorted(plan.items()))
        for name, b in plan.items():
            mod = get_layer(work, name)
            if name not in originals:
                originals[name] = mod.weight.detach().clone()
            w0 = originals[name]
            w_hat = fake_quantize(w0, check_bits(b), per_channel=per_channel)
            sq += sq_error(w0, w_hat)
            mod.weight.copy_(w_hat)
            numel += w0.numel()
            bit_sum += w0.numel() * b
        try:
            if key not in seen:  # an identical plan is evaluated once
                seen[key] = accuracy_and_loss(work, loader)
            acc, loss = seen[key]
        finally:
            for name, w0 in originals.items():
                get_layer(work, name).weight.copy_(w0)
        rows.append(dict(plan=i, avg_bits=bit_sum / max(numel, 1), size_bytes=bit_sum / 8,
                         total_sq_error=sq, accuracy=acc, loss=loss))
    return pd.DataFrame(rows)


def compare_at_budgets(
    model: nn.Module,
    loader,
    table,
    avg_bits: Iterable[float] = (3, 4, 5, 6),
    *,
    methods: Sequence[str] = ("uniform", "mixquant", "budget"),
) -> pd.DataFrame:
    """Uniform precision, MixQuant and the budget plan at the same average bit-width budgets.

    For each target ``t`` in ``avg_bits``: ``uniform`` -- every layer at ``round(t)`` bits (only
    for integer ``t``); ``mixquant`` -- ``mixquant(table, qem_for_budget(table, avg_bits=t))``,
    the smallest QEM whose plan fits; ``budget`` -- ``plan_for_budget(table, avg_bits=t)``, the
    least total squared weight error that fits. Every plan is applied with round-to-nearest
    (vanilla asymmetric PTQ) and evaluated on ``loader``.

    Returns:
        One row per (target, method): ``target``, ``method``, ``qem`` (MixQuant only),
        ``avg_bits``, ``size_bytes``, ``total_sq_error``, ``accuracy``, ``loss`` and ``plan``.
    """
    from ..plan import BitPlan
    from ..search import mixquant, plan_for_budget, qem_for_budget

    rows: list[dict[str, Any]] = []
    for t in avg_bits:
        for method in methods:
            qem = float("nan")
            if method == "uniform":
                if float(t) != round(float(t)):
                    continue
                plan = BitPlan.uniform(table, int(round(float(t))))
            elif method == "mixquant":
                qem = qem_for_budget(table, avg_bits=float(t))
                plan = mixquant(table, qem)
            elif method == "budget":
                plan = plan_for_budget(table, avg_bits=float(t))
            else:
                raise ValueError(f"unknown method {method!r}")
            rows.append(dict(target=float(t), method=method, qem=qem, plan=plan))
    ev = evaluate_plans(model, loader, [r["plan"] for r in rows], per_channel=table.per_channel)
    out = pd.DataFrame(rows)
    for col in ("avg_bits", "size_bytes", "total_sq_error", "accuracy", "loss"):
        out[col] = ev[col].to_numpy()
    return out[["target", "method", "qem", "avg_bits", "size_bytes", "total_sq_error",
                "accuracy", "loss", "plan"]]


def lowering_order(table, baseline_bits: int = 8) -> pd.DataFrame:
    """In which order MixQuant takes bits away from the layers as QEM grows.

    For each layer and each candidate ``b`` below the baseline, the smallest QEM at which the
    layer gets ``b`` bits or fewer is ``min over b' <= b of QE(b') / QE(baseline)``.

    Returns:
        One row per layer, sorted by ``qem_below_baseline`` (the QEM at which it first leaves
        the baseline): ``layer``, ``numel``, ``qem_below_baseline`` and ``qem_to_<b>`` for
        every candidate ``b`` below the baseline, plus ``predicted_to_<b>`` (the ``s^2/12`` law).
    """
    rows = []
    below = [int(b) for b in table.bits if b < baseline_bits]
    for layer in table.layers:
        base = table.qe(layer, baseline_bits)
        row = dict(layer=layer, numel=numel_in(table, layer))
        for b in below:
            r = min(table.qe(layer, c) for c in below if c <= b)
            row[f"qem_to_{b}"] = r / base if base > 0 else float("inf")
        row["qem_below_baseline"] = min(row[f"qem_to_{b}"] for b in below)
        rows.append(row)
    df = pd.DataFrame(rows)
    for b in below:
        df[f"predicted_to_{b}"] = law_qe_ratio(b, baseline_bits)
    return df.sort_values("qem_below_baseline", kind="stable").reset_index(drop=True)
