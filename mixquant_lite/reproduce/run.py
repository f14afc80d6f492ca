"""The ``reproduce`` driver: the results table (MixQuant + vanilla PTQ, + BRECQ, + GPTQ).

:func:`reproduce` takes a :class:`~.config.ReproduceConfig` and writes
``<out_dir>/<dataset>-<model>.csv``, ``.md`` and ``.json``. :func:`brecq_schedule` and
:func:`~.gptq_rows.gptq_schedule` are the lists of BRECQ and GPTQ runs the driver executes and
:func:`workload` counts them, so the run-time estimate (:mod:`.timing`) and the driver cannot
drift apart.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import nn

from ..evaluation import correct_mask
from ..gptq import gptq
from ..layers import first_last_layers, quantizable_layers, weight_of
from ..plan import BitPlan
from ..recon import brecq, fold_bn
from ..search import mixquant, plan_for_budget
from ..table import QETable, qe_table
from ..zoo.testbeds import Testbed, testbed, testbed_stem
from .config import ReproduceConfig
from .gptq_rows import gptq_point, gptq_schedule
from .report import provenance, write_atomic, write_results
from .table import matched_label, method_label, mixquant_at, plan_desc, uniform_plan

__all__ = ["reproduce", "brecq_schedule", "workload", "BrecqPoint", "Experiment", "Outcome"]


class BrecqPoint(NamedTuple):
    """One point of section ``brecq``: middle-layer bit-width ``x``, whether it has a uniform
    plan, and its BRECQ runs in order as ``(search, act_bits)``."""

    x: float
    uniform: bool
    runs: tuple[tuple[str, int | None], ...]


def brecq_schedule(config: ReproduceConfig) -> list[BrecqPoint]:
    """The BRECQ runs of ``config``, point by point (largest bit-width first): at each
    activation setting the uniform plan (integer points), then MixQuant and budget plans where
    ``config.mixed_act_bits`` allows. Identical plans run once, so fewer may actually run."""
    points = []
    for x in sorted({*map(float, config.brecq_bits), *config.brecq_between}, reverse=True):
        uniform = x.is_integer()
        runs: list[tuple[str, int | None]] = []
        for act in config.act_bits:
            if uniform:
                runs.append(("uniform", act))
            if config.mixed_act_bits is None or act in config.mixed_act_bits:
                runs += [("MixQuant", act), ("budget", act)]
        points.append(BrecqPoint(x, uniform, tuple(runs)))
    return points


def workload(config: ReproduceConfig) -> dict[str, int]:
    """Upper bounds on the work of ``reproduce(config)``: ``{"brecq_runs", "gptq_runs",
    "evals", "iters", "n_calib"}`` (evaluations: FP32, every vanilla plan, the BRECQ section's
    vanilla plans, every BRECQ and GPTQ model), counted on :func:`brecq_schedule` and
    :func:`~.gptq_rows.gptq_schedule`."""
    points = brecq_schedule(config)
    runs = sum(len(p.runs) for p in points)
    gptq_runs = sum(len(searches) for _, searches in gptq_schedule(config))
    vanilla = sum(3 if p.uniform else 2 for p in points)
    evals = 1 + len(config.vanilla_bits) + 2 * len(config.qem_grid) + vanilla + runs + gptq_runs
    return {"brecq_runs": runs, "gptq_runs": gptq_runs, "evals": evals, "iters": config.iters,
            "n_calib": config.n_calib}


def reproduce(config: ReproduceConfig) -> pd.DataFrame:
    """Build the results table of ``config``, write CSV + markdown + provenance JSON (the config
    recorded in it), return the DataFrame (``attrs``: ``provenance``, ``paths``)."""
    if not isinstance(config, ReproduceConfig):
        raise TypeError(f"config must be a ReproduceConfig (e.g. QUICK), got "
                        f"{type(config).__name__}")
    t_start = time.perf_counter()
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bed = testbed(config.model, config.dataset, pretrained=config.pretrained,
                  n_calib=config.n_calib, seed=config.seed, batch_size=config.batch_size,
                  workers=config.workers, image_size=config.image_size)
    exp = Experiment(bed, device=device, verbose=config.verbose, t_start=t_start,
                     cache_dir=None if config.cache_dir is None else Path(config.cache_dir),
                     brecq_settings=dict(iters=config.iters, n_calib=config.n_calib,
                                         seed=config.seed, batch_size=min(32, config.n_calib),
                                         per_channel=config.per_channel,
                                         progress=config.progress))
    t = time.perf_counter()
    table = qe_table(exp.model, per_channel=config.per_channel)
    table_f = qe_table(fold_bn(exp.model), per_channel=config.per_channel)  # what BRECQ sees
    qe_s = time.perf_counter() - t
    exp.add("vanilla", "none", "FP32", None, exp.score(exp.model))
    _vanilla_section(exp, table, config.vanilla_bits, config.qem_grid)
    for point in brecq_schedule(config):
        _brecq_point(exp, point, table, table_f)
    for x, _ in gptq_schedule(config):
        gptq_point(exp, x, table_f, config)
    prov = provenance(config, bed, device=device, brecq_batch_size=min(32, config.n_calib),
                      qe_s=qe_s, eval_s=exp.eval_s, total_s=time.perf_counter() - t_start)
    stem = Path(config.out_dir) / testbed_stem(config.model, config.dataset)
    return write_results(exp.rows, exp.masks, exp.reports, prov, stem)


class Outcome(NamedTuple):
    """One quantized model scored: top-1 (%), seconds to make it, a note (``None``, or which
    earlier row had the same plan) and the per-image correctness ("0"/"1" per test image)."""

    top1: float
    wall_s: float
    note: str | None
    correct: str


class Experiment:
    """One model with its evaluation images and calibration images: scores plans quantized with
    vanilla round-to-nearest (:meth:`vanilla`), BRECQ (:meth:`brecq`) or GPTQ (:meth:`gptq`),
    runs each distinct plan once (:meth:`memo`; BRECQ runs also on disk with ``cache_dir``),
    and collects the table's rows (:meth:`add`)."""

    def __init__(self, setup: Testbed, *, device: str, verbose: bool, t_start: float,
                 cache_dir: Path | None, brecq_settings: dict[str, Any]) -> None:
        self.setup = setup
        self.model = setup.model.to(device).eval()
        self.device = device
        self.verbose, self.t_start, self.cache_dir = verbose, t_start, cache_dir
        self.brecq_settings = brecq_settings
        self.rows: list[dict[str, Any]] = []
        self.masks: list[str] = []
        self.reports: dict[str, Any] = {}
        self.eval_s = 0.0
        self._seen: dict[tuple, tuple[Outcome, str]] = {}
        self.n_weights = sum(weight_of(m).numel() for _, m in quantizable_layers(self.model))
        self._folded: nn.Module | None = None

    @property
    def folded(self) -> nn.Module:
        """The BatchNorm-folded model (what BRECQ and GPTQ quantize), made once."""
        if self._folded is None:
            self._folded = fold_bn(self.model).eval()
        return self._folded

    def score(self, model: nn.Module, wall_s: float = 0.0) -> Outcome:
        """Top-1 (%) and per-image correctness of ``model`` on the evaluation images."""
        t = time.perf_counter()
        mask = correct_mask(model, self.setup.loader)
        self.eval_s += time.perf_counter() - t
        return Outcome(100.0 * mask.double().mean().item(), wall_s, None,
                       "".join("1" if v else "0" for v in mask.tolist()))

    def memo(self, key: tuple, label: str, run: Callable[[], Outcome]) -> Outcome:
        """``run()`` the first time ``key`` is seen; afterwards its outcome, noted as the same
        plan as ``label`` of the first run."""
        if key in self._seen:
            out, first = self._seen[key]
            return out._replace(note=f"same plan as {first}")
        out = run()
        self._seen[key] = (out, label)
        return out

    def vanilla(self, plan: BitPlan, label: str) -> Outcome:
        """``plan.apply`` (round-to-nearest) on the unfolded model, scored."""
        def run() -> Outcome:
            t = time.perf_counter()
            qmodel = plan.apply(self.model)
            return self.score(qmodel, time.perf_counter() - t)

        return self.memo(("vanilla", tuple(plan.bits.items())), label, run)

    def brecq(self, plan: BitPlan, act: int | None, label: str) -> Outcome:
        """BRECQ with ``plan`` at activation bits ``act``, scored (read from ``cache_dir`` when
        an identical run was kept there)."""
        def run() -> Outcome:
            disk, spec = self._disk(plan, act)
            if disk is not None and disk.exists():
                hit = json.loads(disk.read_text())
                self.reports[label] = hit["report"]
                return Outcome(hit["top1"], hit["wall_s"], None, hit["correct"])
            t = time.perf_counter()
            qmodel, report = brecq(self.model, self.setup.calib, plan, act_bits=act,
                                   **self.brecq_settings)
            out = self.score(qmodel, time.perf_counter() - t)
            self.reports[label] = report.to_frame().to_dict("records")
            if disk is not None:
                write_atomic(disk, json.dumps(dict(
                    spec=spec, label=label, top1=out.top1, wall_s=out.wall_s,
                    correct=out.correct, report=self.reports[label]), default=str))
            return out

        return self.memo(("brecq", tuple(plan.bits.items()), act), label, run)

    def gptq(self, plan: BitPlan, label: str) -> Outcome:
        """GPTQ of the folded model with ``plan`` (its bits and grid), calibrated on the
        calibration images in batches of 32, scored; the report (per layer, true bits per
        weight, fallback layers) kept under ``label``."""
        def run() -> Outcome:
            t = time.perf_counter()
            batches = [b.to(self.device) for b in self.setup.calib.split(32)]
            qmodel, report = gptq(self.folded, batches, plan)
            out = self.score(qmodel, time.perf_counter() - t)
            self.reports[label] = {"bits_per_weight": report.avg_bits,
                                   "fallback": report.fallback,
                                   "layers": report.to_frame().to_dict("records")}
            return out

        return self.memo(("gptq", tuple(plan.bits.items()), str(plan.spec)), label, run)

    def _disk(self, plan: BitPlan, act: int | None) -> tuple[Path | None, dict[str, Any]]:
        spec = dict(model=self.setup.model_tag, dataset=self.setup.dataset_tag,
                    bits=dict(plan.bits), act=act,
                    **{k: v for k, v in self.brecq_settings.items() if k != "progress"})
        if self.cache_dir is None:
            return None, spec
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"brecq-{digest}.json", spec

    def add(self, section: str, search: str, quantizer: str, plan: BitPlan | None,
            out: Outcome, *, act: int | None = None, qem: float | None = None,
            search_s: float = 0.0, compare_to: str | None = None,
            matched: str | None = None) -> None:
        """Append one row (its per-image correctness kept apart, in the same order). Ten
        parameters: the row's columns, named at the call site."""
        self.masks.append(out.correct)
        self.rows.append(dict(
            section=section, search=search, quantizer=quantizer, qem=qem,
            weight_bits=32.0 if plan is None else plan.avg_bits,
            bits_per_weight=32.0 if plan is None else plan.with_shapes(self.model).bits_per_weight,
            act_bits=act,
            weight_MB=(4 * self.n_weights if plan is None else plan.size_bytes) / 1e6,
            top1=out.top1, wall_s=out.wall_s + search_s, compare_to=compare_to,
            matched=matched, plan="f32" if plan is None else plan_desc(plan), note=out.note,
        ))
        if self.verbose:
            r = self.rows[-1]
            print(f"[{time.perf_counter() - self.t_start:6.0f} s] {section:7s} "
                  f"{method_label(search, quantizer):18s} W{r['weight_bits']:.2f} A{act or 32}: "
                  f"top-1 {out.top1:.2f} %, {r['wall_s']:.1f} s"
                  + (f" ({out.note})" if out.note else ""), file=sys.stderr, flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def _nearestuniform_plan(avg: float, uniforms: dict[int, float]) -> tuple[int, float]:
    b = min(uniforms, key=lambda k: (abs(uniforms[k] - avg), k))
    return b, uniforms[b]


def _vanilla_section(exp: Experiment, table: QETable, vanilla_bits: tuple[int, ...],
                     qem_grid: tuple[float, ...]) -> None:
    """Section ``vanilla``: the MixQuant rule decides every layer, first and last included; one
    row per uniform bit-width and per distinct MixQuant plan, each with its budget plan."""
    uniform = {}
    for b in vanilla_bits:
        plan = uniform_plan(table, b, {})
        uniform[b] = plan.avg_bits
        exp.add("vanilla", "uniform", "vanilla", plan, exp.vanilla(plan, f"vanilla W{b}"))
    seen = set()
    for qem in qem_grid:
        plan, search_s = _timed(partial(mixquant, table, qem))
        if tuple(plan.bits.items()) in seen:
            continue  # the grid's next QEM gave the same plan: one row per distinct plan
        seen.add(tuple(plan.bits.items()))
        b, ref = _nearestuniform_plan(plan.avg_bits, uniform)
        exp.add("vanilla", "MixQuant", "vanilla", plan,
                exp.vanilla(plan, f"MixQuant QEM={qem:g}"), qem=qem, search_s=search_s,
                compare_to=f"vanilla W{b}", matched=matched_label(plan.avg_bits, ref))
        bplan, search_s = _timed(partial(plan_for_budget, table, avg_bits=plan.avg_bits))
        exp.add("vanilla", "budget", "vanilla", bplan,
                exp.vanilla(bplan, f"budget {plan.avg_bits:.2f} bits"), search_s=search_s,
                compare_to=f"vanilla W{b}", matched=matched_label(bplan.avg_bits, ref))


def _brecq_point(exp: Experiment, point: BrecqPoint, table: QETable, table_f: QETable) -> None:
    """Section ``brecq`` rows at the average bit-width of 'first/last 8, every other layer at
    x bits': a uniform plan for integer x, MixQuant and budget plans always, each quantized
    with vanilla RTN (plans from ``table``) and with BRECQ (plans from the folded ``table_f``,
    the runs of ``point.runs``)."""
    x, uniform = point.x, point.uniform
    first, last = first_last_layers(table.layers)
    fl8 = {first: 8, last: 8}
    n_weights = table.total_numel
    mid = sum(n for k, n in table.numel.items() if k not in fl8)
    target = (x * mid + 8 * (n_weights - mid)) / n_weights
    ref_v = f"vanilla W{x:g} (first/last 8)" if uniform else f"W{x:g} target ({target:.3f})"
    if uniform:
        uplan_v = uniform_plan(table, int(x), fl8)
        exp.add("brecq", "uniform", "vanilla", uplan_v, exp.vanilla(uplan_v, ref_v))
    (mplan, qem), search_s = _timed(lambda: mixquant_at(table, target, fl8))
    exp.add("brecq", "MixQuant", "vanilla", mplan,
            exp.vanilla(mplan, f"MixQuant QEM={qem:g} (first/last 8)"), qem=qem,
            search_s=search_s, compare_to=ref_v, matched=matched_label(mplan.avg_bits, target))
    bplan, search_s = _timed(lambda: plan_for_budget(table, avg_bits=target, fixed=fl8))
    exp.add("brecq", "budget", "vanilla", bplan,
            exp.vanilla(bplan, f"budget {target:.3f} bits (first/last 8)"), search_s=search_s,
            compare_to=ref_v, matched=matched_label(bplan.avg_bits, target))

    (mplan_f, qem_f), msearch_s = _timed(lambda: mixquant_at(table_f, target, fl8))
    bplan_f, bsearch_s = _timed(lambda: plan_for_budget(table_f, avg_bits=target, fixed=fl8))
    for search, act in point.runs:
        a = f"A{act}" if act else "A32"
        ref = f"BRECQ W{x:g} {a}" if uniform else f"W{x:g} target ({target:.3f}) {a}"
        if search == "uniform":
            uplan = uniform_plan(table_f, int(x), fl8)
            exp.add("brecq", "uniform", "BRECQ", uplan, exp.brecq(uplan, act, ref), act=act)
        elif search == "MixQuant":
            exp.add("brecq", "MixQuant", "BRECQ", mplan_f,
                    exp.brecq(mplan_f, act, f"MixQuant+BRECQ QEM={qem_f:g} {a}"), act=act,
                    qem=qem_f, search_s=msearch_s, compare_to=ref,
                    matched=matched_label(mplan_f.avg_bits, target))
        else:
            exp.add("brecq", "budget", "BRECQ", bplan_f,
                    exp.brecq(bplan_f, act, f"budget+BRECQ {target:.3f} bits {a}"), act=act,
                    search_s=bsearch_s, compare_to=ref,
                    matched=matched_label(bplan_f.avg_bits, target))
