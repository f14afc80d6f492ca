"""Experiment helpers for the tutorial notebooks (not the search and not BRECQ).

Each function here is one measurement a notebook shows, kept out of the notebook so that the cells
stay short and the measurement is unit-tested:

- :func:`seed_everything` -- seeds Python, NumPy and torch.
- :func:`single_layer_sensitivity` -- quantize one layer at a time, measure the accuracy drop
  (paper claim 1: QE predicts the damage).
- :func:`random_plans` / :func:`evaluate_plans` -- the whole-model view: many random bit-width
  plans, their total squared weight error and their accuracy.
- :func:`spearman_bootstrap` -- Spearman's rank correlation with a percentile bootstrap interval.
- :func:`qe_ratio_frame` -- measured ``QE_b / QE_8`` per layer next to the ``s^2/12`` prediction.
- :func:`exhaustive_search` -- brute force over all ``|B|^k`` plans of ``k`` layers (claim 2).
- :func:`time_qe_tables` / :func:`linear_fit` -- QE-table and search time against weight count.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from .quant import check_bits, fake_quantize

__all__ = [
    "seed_everything",
    "get_layer",
    "accuracy_and_loss",
    "single_layer_sensitivity",
    "random_plans",
    "compare_at_budgets",
    "lowering_order",
    "evaluate_plans",
    "spearman_bootstrap",
    "correlation_table",
    "describe_correlation",
    "predicted_qe_ratio",
    "qe_ratio_frame",
    "qe_matrix",
    "exhaustive_search",
    "ExhaustiveResult",
    "linear_fit",
    "time_call",
    "time_qe_tables",
    "naive_qe_table",
    "exhaustive_scaling",
    "count_weights",
    "read_results",
    "results_dir",
    "matched_comparison",
    "summarize_pairs",
    "unpaired_rows",
    "act_label",
    "uniform_gap",
    "summarize_gaps",
]


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module ``name`` of ``model`` (a ``KeyError`` lists the quantizable names)."""
    modules = dict(model.named_modules())
    if name not in modules:
        known = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
        raise KeyError(f"model has no layer {name!r}; quantizable layers: {known}")
    return modules[name]


@torch.no_grad()
def accuracy_and_loss(model: nn.Module, loader) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and mean cross-entropy (nats per image) in one pass.

    The accuracy equals :func:`mixquant_lite.evaluate.evaluate`; the loss is a finer measure of
    damage than accuracy on a small test set (1,000 images resolve accuracy to 0.1 points only).
    """
    from .evaluate import model_device

    device = model_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    loss = 0.0
    try:
        for x, y in loader:
            logits = model(x.to(device)).float().cpu()
            correct += (logits.argmax(1) == y).sum().item()
            loss += torch.nn.functional.cross_entropy(logits.double(), y, reduction="sum").item()
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("loader yielded no samples")
    return correct / total, loss / total


def _layer_names(model: nn.Module) -> list[str]:
    """Names of the layers MixQuant quantizes (``qe_table.quantizable_layers``)."""
    from .table import quantizable_layers

    out = []
    for item in quantizable_layers(model):
        out.append(item[0] if isinstance(item, tuple) else item)
    return out


def _sq_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """``sum((W - W_hat)^2)``: difference in float32, squares summed in float64 (as ``qe``)."""
    d = (w.detach().float() - w_hat.detach().float()).double().reshape(-1)
    return torch.dot(d, d).item()


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
    names = list(layers) if layers is not None else _layer_names(work)
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
            qe = _sq_error(w0, w_hat) / w0.numel()
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
            sq += _sq_error(w0, w_hat)
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
    from .plan import BitPlan
    from .search import mixquant, plan_for_budget, qem_for_budget

    rows = []
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
        row = dict(layer=layer, numel=_numel(table, layer))
        for b in below:
            r = min(table.qe(layer, c) for c in below if c <= b)
            row[f"qem_to_{b}"] = r / base if base > 0 else float("inf")
        row["qem_below_baseline"] = min(row[f"qem_to_{b}"] for b in below)
        rows.append(row)
    df = pd.DataFrame(rows)
    for b in below:
        df[f"predicted_to_{b}"] = predicted_qe_ratio(b, baseline_bits)
    return df.sort_values("qem_below_baseline", kind="stable").reset_index(drop=True)


def _rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), vectorised."""
    return stats.rankdata(a, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_bootstrap(
    x: Sequence[float],
    y: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    *,
    ci: float = 0.95,
) -> tuple[float, float, float]:
    """Spearman's rank correlation of ``x`` and ``y`` with a percentile bootstrap interval.

    The pairs ``(x_i, y_i)`` are resampled with replacement ``n_boot`` times (generator seeded with
    ``seed``); resamples where either variable is constant (rho undefined) are dropped.

    Returns:
        ``(rho, lo, hi)``: ``scipy.stats.spearmanr`` on the data and the ``(1-ci)/2`` and
        ``(1+ci)/2`` quantiles of the bootstrap distribution.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"need at least 3 pairs, got {len(x)}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boot = _pearson_rows(_rank_rows(x[idx]), _rank_rows(y[idx]))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return rho, float("nan"), float("nan")
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return rho, float(lo), float(hi)


def correlation_table(
    df: pd.DataFrame,
    xs: Sequence[str] = ("qe", "qe_norm"),
    ys: Sequence[str] = ("drop", "loss_increase"),
    *,
    by: str | None = "bits",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """:func:`spearman_bootstrap` for every predictor ``x`` and outcome ``y``, pooled and per group.

    Returns one row per (x, y, subset) with columns ``x``, ``y``, ``subset`` (``"all"`` or
    ``"<by>=<value>"``), ``n``, ``rho``, ``lo``, ``hi`` and ``excludes_zero`` (the interval lies
    entirely above or below 0).
    """
    subsets = [("all", df)]
    if by is not None:
        subsets += [(f"{by}={k}", g) for k, g in df.groupby(by, sort=True)]
    rows = []
    for x in xs:
        for y in ys:
            for label, g in subsets:
                rho, lo, hi = spearman_bootstrap(g[x].to_numpy(), g[y].to_numpy(), n_boot, seed,
                                                 ci=ci)
                rows.append(dict(x=x, y=y, subset=label, n=len(g), rho=rho, lo=lo, hi=hi,
                                 excludes_zero=bool(lo > 0 or hi < 0)))
    return pd.DataFrame(rows)


def describe_correlation(rho: float, lo: float, hi: float) -> str:
    """One line for a correlation and its interval: the numbers, then what the interval allows.

    ``"rho = 0.64 [0.44, 0.78]: a positive relation"`` when the interval excludes 0, else
    ``"... : indistinguishable from none"``.
    """
    text = f"rho = {rho:.2f} [{lo:.2f}, {hi:.2f}]: "
    if lo > 0 or hi < 0:
        return text + ("a positive relation" if lo > 0 else "a negative relation")
    return text + "indistinguishable from none"


def predicted_qe_ratio(bits: int | np.ndarray, baseline_bits: int = 8) -> np.ndarray | float:
    """``QE_b / QE_base`` predicted by the uniform-error law ``QE ~ s^2 / 12``.

    With ``s = range / (2^b - 1)`` and the same range at every bit-width, the ratio is
    ``((2^base - 1) / (2^b - 1))^2``: about 4x per bit removed.
    """
    b = np.asarray(bits, dtype=float)
    out = ((2.0**baseline_bits - 1) / (2.0**b - 1)) ** 2
    return float(out) if out.ndim == 0 else out


def qe_matrix(table) -> pd.DataFrame:
    """A QE table as a wide frame: index layer names (forward order), columns bit-widths."""
    return pd.DataFrame(
        {int(b): [table.qe(layer, b) for layer in table.layers] for b in table.bits},
        index=pd.Index(list(table.layers), name="layer"),
    ).rename_axis(columns="bits")


def qe_ratio_frame(table, baseline_bits: int = 8) -> pd.DataFrame:
    """Measured ``QE_b / QE_base`` for every layer and bit-width of a QE table, with the prediction.

    Returns long format: ``layer``, ``bits``, ``ratio`` (measured), ``predicted`` and
    ``rel_dev`` (``ratio / predicted - 1``). Layers whose baseline QE is 0 are skipped.
    """
    rows = []
    for layer in table.layers:
        base = table.qe(layer, baseline_bits)
        if base <= 0:
            continue
        for b in table.bits:
            r = table.qe(layer, b) / base
            p = predicted_qe_ratio(b, baseline_bits)
            rows.append(dict(layer=layer, bits=int(b), ratio=r, predicted=p, rel_dev=r / p - 1))
    return pd.DataFrame(rows)


class ExhaustiveResult(dict):
    """Result of :func:`exhaustive_search`: a dict with keys ``bits`` (``{layer: bits}`` or
    ``None`` if no plan qualifies), ``n_plans`` (plans enumerated), ``seconds`` and ``layers``."""


def _numel(table, layer: str) -> int:
    n = table.numel
    return int(n[layer] if isinstance(n, Mapping) else n[list(table.layers).index(layer)])


def exhaustive_search(
    table,
    qem: float,
    *,
    layers: Sequence[str] | None = None,
    baseline_bits: int = 8,
) -> ExhaustiveResult:
    """Brute-force MixQuant's problem: enumerate every bit-width combination of ``layers``.

    Among all ``|bits|^k`` plans of the ``k`` layers (each layer takes any candidate of
    ``table.bits``), keep those where every layer's QE is within ``qem * QE(layer, baseline)``
    and return the one with the fewest stored bits (ties: the first enumerated). It visits every
    plan, as a search with no per-layer decomposition has to; MixQuant's rule answers the same
    question with ``k * |bits|`` look-ups, and the two must agree.
    """
    if not (isinstance(qem, (int, float)) and math.isfinite(qem) and qem > 0):
        raise ValueError(f"qem must be a finite number > 0, got {qem!r}")
    names = list(layers) if layers is not None else list(table.layers)
    cands = [int(b) for b in table.bits]
    ok = [[table.qe(n, b) <= qem * table.qe(n, baseline_bits) for b in cands] for n in names]
    sizes = [[_numel(table, n) * b for b in cands] for n in names]
    t0 = time.perf_counter()
    best, best_size, count = None, math.inf, 0
    for combo in itertools.product(range(len(cands)), repeat=len(names)):
        count += 1
        size = 0
        feasible = True
        for li, bi in enumerate(combo):
            if not ok[li][bi]:
                feasible = False
                break
            size += sizes[li][bi]
        if feasible and size < best_size:
            best, best_size = combo, size
    seconds = time.perf_counter() - t0
    bits = None if best is None else {n: cands[bi] for n, bi in zip(names, best, strict=True)}
    return ExhaustiveResult(bits=bits, n_plans=count, seconds=seconds, layers=names)


def exhaustive_scaling(
    table, ks: Iterable[int] = (1, 2, 3, 4, 5, 6), qem: float = 300.0, *, baseline_bits: int = 8
) -> pd.DataFrame:
    """Exhaustive search over the first ``k`` layers of ``table`` against MixQuant's rule.

    Returns one row per ``k``: ``layers`` (k), ``exhaustive_plans`` (``|bits|^k`` enumerated),
    ``exhaustive_s`` (its wall time), ``mixquant_lookups`` (``k * |bits|``), ``mixquant_s``
    (wall time of the rule on the same ``k`` layers, best of 5) and ``agree`` (same plan).
    """
    from .search import mixquant

    rows = []
    for k in ks:
        names = list(table.layers)[:k]
        ex = exhaustive_search(table, qem, layers=names, baseline_bits=baseline_bits)
        t_mq, plan = time_call(lambda: mixquant(table, qem, baseline_bits=baseline_bits), 5)
        rows.append(dict(layers=k, exhaustive_plans=ex["n_plans"], exhaustive_s=ex["seconds"],
                         mixquant_lookups=k * len(table.bits), mixquant_s=t_mq,
                         agree=ex["bits"] == {n: plan.bits[n] for n in names}))
    return pd.DataFrame(rows)


def naive_qe_table(model: nn.Module, bits: Iterable[int] = range(2, 9)) -> np.ndarray:
    """The obvious QE table: :func:`mixquant_lite.quant.qe` once per layer and bit-width.

    A reference for timing and checking :func:`mixquant_lite.table.qe_table`: one full
    quantize-dequantize of the layer per bit-width, each reading the weights again. Returns a
    float64 array ``(layers, bits)`` in ``quantizable_layers`` order.
    """
    from .quant import qe
    from .table import quantizable_layers

    bits = [check_bits(b) for b in bits]
    with torch.no_grad():
        return np.array([[qe(m.weight, b) for b in bits] for _, m in quantizable_layers(model)])


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` (``scipy.stats.linregress``) and its R^2."""
    res = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return dict(slope=float(res.slope), intercept=float(res.intercept),
                r2=float(res.rvalue**2), stderr=float(res.stderr))


def time_call(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds, and the last result."""
    best, out = math.inf, None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def count_weights(model: nn.Module) -> tuple[int, int]:
    """``(number of quantizable layers, number of their weights)`` (Conv2d and Linear)."""
    names = _layer_names(model)
    return len(names), sum(get_layer(model, n).weight.numel() for n in names)


def time_qe_tables(
    names: Sequence[str] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    *,
    bits: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
    n_qems: Sequence[int] = (1, 10),
    repeats: int = 1,
    reference: Callable | None = None,
    reference_names: Sequence[str] = (),
    build: Callable[[str], nn.Module] | None = None,
) -> pd.DataFrame:
    """Time QE-table construction and the MixQuant search for torchvision ResNets.

    Models are built with random initialisation (``torchvision_resnet(name, pretrained=False)``,
    or ``build(name)``): the work of the QE table -- min, max, round, clamp and a sum over every
    weight at every bit-width -- does not depend on the values of the weights, so the time
    measured on random weights is the time on trained ones.

    Returns:
        One row per model: ``model``, ``layers``, ``weights``, ``table_s`` (best of ``repeats``),
        ``search_s_<k>`` for each ``k`` in ``n_qems`` (the rule for ``k`` log-spaced QEMs on the
        same table, best of ``max(repeats, 10)``), and ``reference_s`` (``reference(model,
        bits)`` timed once, for models in ``reference_names``; NaN otherwise).
    """
    from .models import torchvision_resnet
    from .search import mixquant
    from .table import qe_table

    build = build or (lambda n: torchvision_resnet(n, pretrained=False))
    rows = []
    for name in names:
        model = build(name)
        n_layers, n_weights = count_weights(model)
        t_table, table = time_call(lambda m=model: qe_table(m, bits=bits), repeats)
        row = dict(model=name, layers=n_layers, weights=n_weights, table_s=t_table)
        for k in n_qems:
            qems = np.logspace(0, 4, k) if k > 1 else [100.0]

            def run(qems=qems, table=table):
                return [mixquant(table, float(q)) for q in qems]

            row[f"search_s_{k}"] = time_call(run, max(repeats, 10))[0]
        if reference is not None and name in reference_names:
            row["reference_s"] = time_call(lambda m=model: reference(m, bits), 1)[0]
        else:
            row["reference_s"] = float("nan")
        rows.append(row)
        del model, table
    return pd.DataFrame(rows)


def results_dir() -> os.PathLike:
    """The repository's ``results/`` folder (committed output of ``mixquant-lite reproduce``).

    The package is installed editable from a clone (locally and in Colab), so it sits next to
    ``mixquant_lite/``; ``$MIXQUANT_LITE_RESULTS`` overrides it.
    """
    from pathlib import Path

    env = os.environ.get("MIXQUANT_LITE_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "results"


def read_results(stem: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a results table written by ``mixquant-lite reproduce``: ``<stem>.csv`` and the
    provenance in ``<stem>.json`` (command, settings, git commit, device, times).

    ``stem`` is the path without suffix, e.g. ``results/mnist5k-resnet20-mnist5k``.
    Raises ``FileNotFoundError`` naming the command that writes the files.
    """
    import json
    from pathlib import Path

    stem = Path(stem)
    csv, js = stem.with_suffix(".csv"), stem.with_suffix(".json")
    for p in (csv, js):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; `mixquant-lite reproduce` writes it")
    df = pd.read_csv(csv)
    if "act_bits" in df:
        df["act_bits"] = df["act_bits"].astype("Int64")
    return df, json.loads(js.read_text())["provenance"]


def matched_comparison(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """Pair every mixed-precision row of a results table with its uniform counterpart.

    For each row whose ``method`` is ``"<search> + <quantizer>"`` (``MixQuant + vanilla``,
    ``budget + BRECQ``...), the counterpart is the row of the same ``section`` and ``act_bits``
    whose method is the bare ``<quantizer>`` (uniform precision) with the nearest
    ``weight_bits``. Pairs further apart than ``tol`` bits are dropped (e.g. 2.5-bit targets
    that have no uniform point); a mixed row whose plan is the uniform one is kept and flagged.

    Returns one row per pair: ``section``, ``quantizer``, ``search``, ``act_bits`` (``<NA>``:
    float activations),
    ``uniform_bits``, ``mixed_bits``, ``uniform_top1``, ``mixed_top1``, ``delta`` (mixed minus
    uniform, points) and ``same_plan`` (the two rows hold the same bit-width histogram).
    """
    rows = []
    for _, r in df.iterrows():
        method = str(r["method"])
        if " + " not in method:
            continue
        search, quantizer = method.split(" + ", 1)
        act = r.get("act_bits")
        same_act = (df["act_bits"].isna() if pd.isna(act) else df["act_bits"] == act)
        cands = df[(df["section"] == r["section"]) & (df["method"] == quantizer) & same_act]
        if cands.empty:
            continue
        u = cands.loc[(cands["weight_bits"] - r["weight_bits"]).abs().idxmin()]
        if abs(u["weight_bits"] - r["weight_bits"]) > tol:
            continue
        rows.append(dict(
            section=r["section"], quantizer=quantizer, search=search,
            act_bits=None if pd.isna(act) else int(act),
            uniform_bits=float(u["weight_bits"]), mixed_bits=float(r["weight_bits"]),
            uniform_top1=float(u["top1"]), mixed_top1=float(r["top1"]),
            delta=float(r["top1"] - u["top1"]), same_plan=str(r["plan"]) == str(u["plan"]),
        ))
    out = pd.DataFrame(rows, columns=[
        "section", "quantizer", "search", "act_bits", "uniform_bits", "mixed_bits",
        "uniform_top1", "mixed_top1", "delta", "same_plan"])
    out["act_bits"] = out["act_bits"].astype("Int64")  # <NA> = float activations
    return out


def act_label(act_bits) -> str:
    """``"A8"`` for 8-bit activations, ``"A32"`` for float ones (``None`` / NaN / ``<NA>``)."""
    return "A32" if act_bits is None or pd.isna(act_bits) else f"A{int(act_bits)}"


def summarize_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Tally :func:`matched_comparison` per (quantizer, search).

    Returns one row per (``quantizer``, ``search``): ``pairs``, ``identical`` (the mixed plan is
    the uniform one), ``wins`` / ``losses`` / ``ties`` among the pairs whose plans differ, and
    ``mean_delta`` over those (NaN if none differ), in accuracy points.
    """
    rows = []
    for (quantizer, search), g in pairs.groupby(["quantizer", "search"], sort=False):
        d = g[~g["same_plan"].astype(bool)]
        rows.append(dict(quantizer=quantizer, search=search, pairs=len(g),
                         identical=len(g) - len(d), wins=int((d["delta"] > 0).sum()),
                         losses=int((d["delta"] < 0).sum()), ties=int((d["delta"] == 0).sum()),
                         mean_delta=float(d["delta"].mean()) if len(d) else float("nan")))
    return pd.DataFrame(rows, columns=["quantizer", "search", "pairs", "identical", "wins",
                                       "losses", "ties", "mean_delta"])


def unpaired_rows(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """Mixed-precision rows of a results table with no uniform row within ``tol`` bits (e.g.
    the 2.5-bit targets between uniform points), for comparing the searches with each other."""
    paired = matched_comparison(df, tol)
    keep = []
    for i, r in df.iterrows():
        if " + " not in str(r["method"]):
            continue
        search, quantizer = str(r["method"]).split(" + ", 1)
        act = r.get("act_bits")
        hit = paired[(paired["section"] == r["section"]) & (paired["quantizer"] == quantizer)
                     & (paired["search"] == search)
                     & (paired["mixed_bits"] == float(r["weight_bits"]))]
        hit = hit[hit["act_bits"].isna()] if pd.isna(act) else hit[hit["act_bits"] == act]
        if hit.empty:
            keep.append(i)
    return df.loc[keep]


def uniform_gap(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """How far each mixed-precision row lies above the uniform-precision curve of its quantizer.

    The uniform curve of a (section, quantizer, activation setting) is the piecewise-linear
    interpolation of its uniform rows' accuracy against average weight bits. A mixed row on an
    integer budget is compared with that uniform point; one between uniform points (a 2.5-bit
    target) with the straight line between its neighbours: what mixing the two uniform
    bit-widths would be expected to give, if nothing were gained by choosing *which* layers get
    more bits. Rows outside the uniform range are dropped.

    Returns: ``section``, ``quantizer``, ``search``, ``act_bits``, ``weight_bits``, ``top1``,
    ``uniform_curve`` (interpolated uniform accuracy at ``weight_bits``), ``gap`` (points) and
    ``between`` (no uniform point within ``tol`` bits).
    """
    rows = []
    for _, r in df.iterrows():
        method = str(r["method"])
        if " + " not in method:
            continue
        search, quantizer = method.split(" + ", 1)
        act = r.get("act_bits")
        same_act = df["act_bits"].isna() if pd.isna(act) else df["act_bits"] == act
        u = df[(df["section"] == r["section"]) & (df["method"] == quantizer) & same_act]
        u = u.sort_values("weight_bits")
        x = float(r["weight_bits"])
        if u.empty or not u["weight_bits"].min() - 1e-9 <= x <= u["weight_bits"].max() + 1e-9:
            continue
        curve = float(np.interp(x, u["weight_bits"], u["top1"]))
        rows.append(dict(section=r["section"], quantizer=quantizer, search=search,
                         act_bits=act, weight_bits=x, top1=float(r["top1"]),
                         uniform_curve=curve, gap=float(r["top1"]) - curve,
                         between=bool((u["weight_bits"] - x).abs().min() > tol)))
    out = pd.DataFrame(rows, columns=["section", "quantizer", "search", "act_bits",
                                      "weight_bits", "top1", "uniform_curve", "gap", "between"])
    out["act_bits"] = out["act_bits"].astype("Int64")
    return out


def summarize_gaps(gaps: pd.DataFrame, tol: float = 0.05) -> pd.DataFrame:
    """Tally the rows of :func:`uniform_gap` that lie between uniform points.

    One row per (``quantizer``, ``search``): ``rows``, ``above`` / ``on`` / ``below`` the uniform
    line (``on`` = within ``tol`` points: 1 test image in 1,000 is 0.1 points) and ``mean_gap``.
    """
    g = gaps[gaps["between"].astype(bool)]
    rows = []
    for (quantizer, search), d in g.groupby(["quantizer", "search"], sort=False):
        rows.append(dict(quantizer=quantizer, search=search, rows=len(d),
                         above=int((d["gap"] > tol).sum()), on=int((d["gap"].abs() <= tol).sum()),
                         below=int((d["gap"] < -tol).sum()), mean_gap=float(d["gap"].mean())))
    return pd.DataFrame(rows, columns=["quantizer", "search", "rows", "above", "on", "below",
                                       "mean_gap"])
