"""Timing experiments: brute-force search over small plan spaces, a naive QE table for reference,
linear fits of run time against size."""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from ..quant import check_bits
from .helpers import count_weights, numel_in

T = TypeVar("T")

__all__ = [
    "ExhaustiveResult",
    "exhaustive_search",
    "exhaustive_scaling",
    "naive_qe_table",
    "linear_fit",
    "time_call",
    "time_qe_tables",
]


class ExhaustiveResult(dict):
    """Result of :func:`exhaustive_search`: a dict with keys ``bits`` (``{layer: bits}`` or
    ``None`` if no plan qualifies), ``n_plans`` (plans enumerated), ``seconds`` and ``layers``."""



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
    sizes = [[numel_in(table, n) * b for b in cands] for n in names]
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
    from ..search import mixquant

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
    from ..layers import quantizable_layers, weight_of
    from ..quant import qe

    bits = [check_bits(b) for b in bits]
    with torch.no_grad():
        return np.array([[qe(weight_of(m), b) for b in bits] for _, m in quantizable_layers(model)])


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` (``scipy.stats.linregress``) and its R^2."""
    res = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return dict(slope=float(res.slope), intercept=float(res.intercept),
                r2=float(res.rvalue**2), stderr=float(res.stderr))


def time_call(fn: Callable[[], T], repeats: int = 3) -> tuple[float, T]:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds, and the last result."""
    t0 = time.perf_counter()
    out = fn()
    best = time.perf_counter() - t0
    for _ in range(max(1, repeats) - 1):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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
    from ..search import mixquant
    from ..table import qe_table
    from ..zoo.models import torchvision_resnet

    build = build or (lambda n: torchvision_resnet(n, pretrained=False))
    rows = []
    for name in names:
        model = build(name)
        n_layers, n_weights = count_weights(model)
        t_table, table = time_call(partial(qe_table, model, bits=bits), repeats)
        row = dict(model=name, layers=n_layers, weights=n_weights, table_s=t_table)
        for k in n_qems:
            qems = np.logspace(0, 4, k) if k > 1 else [100.0]

            def run(qems=qems, table=table):
                return [mixquant(table, float(q)) for q in qems]

            row[f"search_s_{k}"] = time_call(run, max(repeats, 10))[0]
        if reference is not None and name in reference_names:
            row["reference_s"] = time_call(partial(reference, model, bits), 1)[0]
        else:
            row["reference_s"] = float("nan")
        rows.append(row)
        del model, table
    return pd.DataFrame(rows)
