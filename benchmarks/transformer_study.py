"""Transformers: does QE still tell which layers matter? (issue 16, notebook 08)

For one text testbed (``minilm-l6``: all-MiniLM-L6-v2 on 1,745 stdlib retrieval pairs;
``chargpt-pydoc``: the shipped character GPT on held-out pydoc text), every quantizable layer
(``nn.Linear``) quantized per output channel with round-to-nearest (``BitPlan.apply``), float
activations, candidates 2, 3, 4 and 8 bits (the QE table of all bit-widths 2..8 is timed apart):

1. the tables of the four measures (``qe``, ``hessian``, ``fisher``, ``output``,
   :func:`~mixquant_lite.sensitivity.sensitivity_table`, on the testbed's calibration windows),
   each with its seconds and its ratio to one FP32 forward pass over the calibration set;
2. single-layer damage: each layer alone at 2, 3, 4 bits. MiniLM: mean ``1 - cosine`` of 256
   query embeddings to their FP32 ones; GPT: mean increase of held-out nats/char over all
   chunks. Spearman of each measure (QE per weight, QE x size, Hessian, Fisher, output) with
   the damage, per bit-width and pooled, with a bootstrap over layers (clusters);
3. at average bits 2.5 / 3 / 3.5 / 4: uniform (integer budgets), MixQuant in both readings
   (``mixquant(table, qem)`` and ``baseline="model"``, the QEM meeting the budget), and the
   budget plan of each measure, round-to-nearest, then BRECQ (``--brecq-iters``) at 3 bits;
   paired tests over the items (exact McNemar on top-1/top-5, paired bootstrap on cosine or
   nats/char), Holm-adjusted within each question's family.

Resumable: each finished piece is cached in ``data/cache/transformer-<testbed>/``; results go to
``results/transformer-<testbed>.{json,md}`` (+ ``-items.npz``: per-item outcomes) and the
costs to ``benchmarks/results/transformer_costs-<testbed>.{json,md}``.

    OMP_NUM_THREADS=1 python benchmarks/transformer_study.py --testbed minilm-l6
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from _provenance import commit  # benchmarks/ is on sys.path when run as a script
from _transformer_stats import holm, paired_items, spearman_clustered

from mixquant_lite import (
    BitPlan,
    QETable,
    QuantSpec,
    brecq,
    mixquant,
    plan_for_budget,
    qem_for_budget,
)
from mixquant_lite.search import model_baseline_qe
from mixquant_lite.sensitivity import sensitivity_table
from mixquant_lite.zoo.text_testbeds import TESTBEDS, TextTestbed

PER_CHANNEL = QuantSpec(granularity="per_channel")  # the study's grids

ROOT = Path(__file__).resolve().parents[1]
BITS = (2, 3, 4, 8)  # candidates of the plans (8: MixQuant's baseline)
DAMAGE_BITS = (2, 3, 4)
BUDGETS = (2.5, 3.0, 3.5, 4.0)
MEASURES = ("qe", "hessian", "fisher", "output")
N_DAMAGE_ITEMS = 256
PLAN_ORDER = ("plan-qe", "mixquant", "mixquant-model", "uniform", "plan-output", "plan-fisher",
              "plan-hessian")


class Cache:
    """One ``.npz`` (arrays) or ``.json`` file per finished piece, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str):
        p = self.folder / f"{key}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, key: str, value) -> None:
        p = self.folder / f"{key}.json"
        tmp = p.with_suffix(".part")
        tmp.write_text(json.dumps(value))
        tmp.replace(p)


def _jsonable(out: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).astype(float).tolist() for k, v in out.items()}


def _table_json(t: QETable) -> dict:
    return {"layers": list(t.layers), "bits": list(t.bits), "numel": [t.numel[n] for n in t.layers],
            "values": t.values.tolist(), "measure": t.measure, "per_channel": t.per_channel}


def _table_from_json(d: dict) -> QETable:
    return QETable(tuple(d["layers"]), tuple(d["bits"]), dict(zip(d["layers"], d["numel"],
                   strict=True)), np.array(d["values"]), d["per_channel"], measure=d["measure"])


def fp32_forward_seconds(bed: TextTestbed, batch_size: int = 64, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one FP32 forward pass over the calibration set."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for xb in bed.calib.split(batch_size):
                bed.model(xb)
            best = min(best, time.perf_counter() - t0)
    return best


def tables(bed: TextTestbed, cache: Cache, n_probes: int, measures: tuple[str, ...],
           report_only: bool = False) -> tuple[dict[str, QETable], dict]:
    """The measures' tables and their seconds (cached one by one; with ``report_only`` only
    the cached ones)."""
    out, secs = {}, {}
    for m in measures:
        hit = cache.get(f"table-{m}-n{len(bed.calib)}")
        if hit is None and report_only:
            continue
        if hit is None:
            opts = {"n_probes": n_probes, "batch_size": 32} if m == "hessian" else (
                {} if m == "qe" else {"batch_size": 32})
            if m == "qe":  # warm (imports, kernel selection): time the table, not the start-up
                sensitivity_table(bed.model, m, bed.calib, BITS, per_channel=True)
            t0 = time.perf_counter()
            t = sensitivity_table(bed.model, m, bed.calib, BITS, per_channel=True, **opts)
            hit = {"table": _table_json(t), "seconds": time.perf_counter() - t0}
            cache.put(f"table-{m}-n{len(bed.calib)}", hit)
            print(f"table {m}: {hit['seconds']:.1f} s", flush=True)
        out[m], secs[m] = _table_from_json(hit["table"]), hit["seconds"]
    return out, secs


def damage(bed: TextTestbed, cache: Cache, qe: QETable, metric: str, items: np.ndarray
           ) -> tuple[np.ndarray, dict]:
    """Each layer alone at each of DAMAGE_BITS: per-item damage, cached per (layer, bits).

    Returns ``(mean damage (layers, bits), {(layer index, bits): per-item damage list})``.
    """
    sign = -1.0 if bed.metrics[metric] == "higher" else 1.0
    ref = np.asarray(bed.fp32[metric])
    mean = np.zeros((len(qe.layers), len(DAMAGE_BITS)))
    per_item = {}
    for i, name in enumerate(qe.layers):
        for j, b in enumerate(DAMAGE_BITS):
            key = f"damage-{i}-{b}"
            hit = cache.get(key)
            if hit is None:
                q = BitPlan({name: b}, {name: qe.numel[name]}, PER_CHANNEL).apply(bed.model)
                got = np.asarray(bed.evaluate_items(q, items)[metric])
                hit = (sign * (got - ref[items])).tolist()
                cache.put(key, hit)
            per_item[(i, b)] = hit
            mean[i, j] = float(np.mean(hit))
        print(f"damage {i + 1}/{len(qe.layers)} {name}: {mean[i].round(5).tolist()}", flush=True)
    return mean, per_item


def qe_all_bits(bed: TextTestbed, cache: Cache) -> dict:
    """Seconds of the QE table at all bit-widths 2..8 (best of 3), without and with the word
    embedding registered as a layer (``register_layer(nn.Embedding)``)."""
    hit = cache.get("qe-all-bits")
    if hit is None:
        from torch import nn

        from mixquant_lite import qe_table
        from mixquant_lite.layers import register_layer, unregister_layer

        hit = {}
        for label, emb in (("linear layers", False), ("linear layers + embeddings", True)):
            if emb:
                register_layer(nn.Embedding)
            try:
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    t = qe_table(bed.model, range(2, 9), per_channel=True)
                    times.append(time.perf_counter() - t0)
            finally:
                unregister_layer(nn.Embedding)
            hit[label] = {"seconds": min(times), "layers": len(t.layers),
                          "weights": t.total_numel}
        cache.put("qe-all-bits", hit)
    return hit


def model_reading_qem(table: QETable, avg_bits: float) -> float | None:
    """Smallest QEM whose model-baseline MixQuant plan meets ``avg_bits`` (exact over the
    thresholds where the plan changes), or ``None`` when none does."""
    base = model_baseline_qe(table)
    for q in np.unique(table.values[table.values > 0] / base):
        for qq in (q, np.nextafter(q, np.inf)):
            if mixquant(table, float(qq), baseline="model").avg_bits <= avg_bits + 1e-9:
                return float(qq)
    return None


def plans_at(tabs: dict[str, QETable], avg_bits: float) -> dict[str, BitPlan]:
    """The plans compared at one budget."""
    qe = tabs["qe"]
    plans: dict[str, BitPlan] = {}
    if float(avg_bits).is_integer():
        b = int(avg_bits)
        plans["uniform"] = BitPlan({n: b for n in qe.layers}, dict(qe.numel), PER_CHANNEL,
                                   meta={"method": "uniform"})
    plans["mixquant"] = mixquant(qe, qem_for_budget(qe, avg_bits=avg_bits))
    qem = model_reading_qem(qe, avg_bits)
    if qem is not None:
        plans["mixquant-model"] = mixquant(qe, qem, baseline="model")
    for m, t in tabs.items():
        plans[f"plan-{m}"] = plan_for_budget(t, avg_bits=avg_bits)
    return plans


def evaluate_plans(bed: TextTestbed, cache: Cache, tabs: dict[str, QETable], brecq_iters: int,
                   brecq_plans: tuple[str, ...], report_only: bool = False,
                   budgets: tuple[float, ...] = BUDGETS) -> tuple[dict, dict]:
    """Outcomes (per item) of every plan at every budget, RTN and (3 bits) BRECQ; seconds.

    Plans run in :data:`PLAN_ORDER` (all budgets of one method, then the next); with
    ``report_only`` only the cached ones are returned."""
    outcomes, info = {}, {}
    todo = [(avg, name, plan) for avg in budgets for name, plan in plans_at(tabs, avg).items()]
    todo.sort(key=lambda t: (PLAN_ORDER.index(t[1]), t[0]))
    for avg, name, plan in todo:
        key = f"rtn-{avg}-{name}"
        bits_key = "rtn-bits-" + "".join(str(b) for b in plan.bits.values())
        hit = cache.get(key) or cache.get(bits_key)  # the same bits: the same model
        if hit is None and not report_only:
            t0 = time.perf_counter()
            q = plan.apply(bed.model)
            apply_s = time.perf_counter() - t0
            hit = {"outcomes": _jsonable(bed.evaluate(q)), "avg_bits": plan.avg_bits,
                   "apply_seconds": apply_s, "bits": list(plan.bits.values())}
            cache.put(bits_key, hit)
            print(f"{key}: {bed.summary(hit['outcomes'])}", flush=True)
        if hit is not None:
            outcomes[key], info[key] = hit["outcomes"], hit
    if brecq_iters > 0:
        for name, plan in plans_at(tabs, 3.0).items():
            if name not in brecq_plans:
                continue
            key = f"brecq-3.0-{name}"
            hit = cache.get(key)
            if hit is None and not report_only:
                q, rep = brecq(bed.model, bed.calib, plan, iters=brecq_iters,
                               n_calib=len(bed.calib), batch_size=min(32, len(bed.calib)),
                               first_last_bits=None,
                               fold_batchnorm=False, progress=False)
                hit = {"outcomes": _jsonable(bed.evaluate(q)), "avg_bits": plan.avg_bits,
                       "seconds": rep.seconds, "iters": brecq_iters,
                       "bits": list(plan.bits.values())}
                cache.put(key, hit)
                print(f"{key}: {bed.summary(hit['outcomes'])} ({rep.seconds:.0f} s)", flush=True)
            if hit is not None:
                outcomes[key], info[key] = hit["outcomes"], hit
    return outcomes, info


def comparisons(bed: TextTestbed, outcomes: dict) -> list[dict]:
    """Question 2's family: paired tests at each budget, Holm-adjusted."""
    rows = []
    keys = set(outcomes)
    for quant in ("rtn", "brecq"):
        for avg in BUDGETS:
            ref = f"{quant}-{avg}-plan-qe"
            if ref not in keys:
                continue
            for other in ("uniform", "mixquant", "mixquant-model", "plan-hessian",
                          "plan-fisher", "plan-output"):
                k = f"{quant}-{avg}-{other}"
                if k not in keys:
                    continue
                for metric, kind in bed.metrics.items():
                    rows.append({"quantizer": quant, "avg_bits": avg, "a": "plan-qe", "b": other,
                                 "metric": metric,
                                 **paired_items(outcomes[ref][metric], outcomes[k][metric],
                                                kind)})
    for r, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_holm"] = p
        r["verdict"] = "tie" if p >= 0.05 else ("plan-qe better" if r["diff_better"] > 0
                                                else f"{r['b']} better")
    return rows


def correlations(bed: TextTestbed, tabs: dict[str, QETable], mean_damage: np.ndarray) -> list[dict]:
    """Question 1's family: Spearman of each measure with the damage, Holm-adjusted."""
    qe = tabs["qe"]
    cols = [qe.bits.index(b) for b in DAMAGE_BITS]
    preds = {"qe-per-weight": qe.values[:, cols], "qe-x-size": qe.cost_matrix()[:, cols]}
    for m in ("hessian", "fisher", "output"):
        if m in tabs:
            preds[m] = tabs[m].cost_matrix()[:, cols]
    types = np.array([bed.layer_type(n) for n in qe.layers])
    rows = []
    for name, pred in preds.items():
        for j, b in enumerate(DAMAGE_BITS):
            rows.append({"predictor": name, "bits": str(b), "layer_type": "all",
                         **spearman_clustered(pred[:, [j]], mean_damage[:, [j]])})
        rows.append({"predictor": name, "bits": "2-4 pooled", "layer_type": "all",
                     **spearman_clustered(pred, mean_damage)})
    for t in sorted(set(types)):
        sel = types == t
        if sel.sum() >= 3:
            rows.append({"predictor": "qe-per-weight", "bits": "2-4 pooled", "layer_type": t,
                         **spearman_clustered(preds["qe-per-weight"][sel], mean_damage[sel])})
    for r, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_holm"] = p
        r["verdict"] = ("ranks the damage" if p < 0.05 and r["rho"] > 0 else
                        "ranks it backwards" if p < 0.05 else "no evidence")
    return rows


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    bed = TESTBEDS[args.testbed](n_calib=args.n_calib)
    cache = Cache(ROOT / "data" / "cache" / f"transformer-{args.testbed}")
    t_fwd = fp32_forward_seconds(bed)
    tabs, secs = tables(bed, cache, args.n_probes, ("qe",))
    metric = "cosine" if "cosine" in bed.metrics else "nll"
    n_items = len(next(iter(bed.fp32.values())))
    items = np.arange(n_items)
    if n_items > args.damage_items:
        items = np.sort(np.random.default_rng(0).choice(n_items, args.damage_items, replace=False))
    mean_damage, per_item = damage(bed, cache, tabs["qe"], metric, items)
    brecq_plans = tuple(args.brecq_plans.split(","))
    # 3 bits first: the QE-based plans (no data-aware table needed), the other tables, their
    # plans; then the other budgets. A --report-only run then has complete 3-bit comparisons.
    evaluate_plans(bed, cache, tabs, 0, brecq_plans, args.report_only, (3.0,))
    more, more_s = tables(bed, cache, args.n_probes, tuple(args.measures.split(",")),
                          args.report_only)
    tabs.update(more)
    secs.update(more_s)
    evaluate_plans(bed, cache, tabs, 0, brecq_plans, args.report_only, (3.0,))
    outcomes, info = evaluate_plans(bed, cache, tabs, args.brecq_iters, brecq_plans,
                                    args.report_only,
                                    tuple(float(b) for b in args.budgets.split(",")))
    qe_all = qe_all_bits(bed, cache)
    return {
        "testbed": args.testbed, "fp32": bed.summary(), "metrics": bed.metrics,
        "layers": list(tabs["qe"].layers),
        "numel": [tabs["qe"].numel[n] for n in tabs["qe"].layers],
        "layer_types": [bed.layer_type(n) for n in tabs["qe"].layers],
        "tables": {m: _table_json(t) for m, t in tabs.items()},
        "damage_metric": metric, "damage_bits": list(DAMAGE_BITS), "damage_items": items.tolist(),
        "damage": mean_damage.tolist(),
        "damage_per_item_3bit": [per_item[(i, 3)] for i in range(len(tabs["qe"].layers))],
        "q1": correlations(bed, tabs, mean_damage),
        "q2": comparisons(bed, outcomes),
        "plans": {k: {"summary": bed.summary({m: np.asarray(v) for m, v in o.items()}),
                      **{f: info[k][f] for f in ("avg_bits", "bits") if f in info[k]},
                      "seconds": info[k].get("seconds", info[k].get("apply_seconds"))}
                  for k, o in outcomes.items()},
        "costs": {"fp32_forward_calib_seconds": t_fwd, "n_calib": len(bed.calib),
                  "calib_shape": list(bed.calib.shape),
                  "measures": {m: {"seconds": s, "ratio_to_fp32_forward": s / t_fwd}
                               for m, s in secs.items()},
                  "qe_table_bits_2_to_8": {k: {**v, "ratio_to_fp32_forward": v["seconds"] / t_fwd}
                                           for k, v in qe_all.items()},
                  "brecq": {k: {"seconds": v["seconds"], "iters": v["iters"],
                                "ratio_to_fp32_forward": v["seconds"] / t_fwd}
                            for k, v in info.items() if k.startswith("brecq")}},
        "items": {k: o for k, o in outcomes.items()}, "fp32_items": _jsonable(bed.fp32),
        "provenance": {"commit": commit(), "command": " ".join([sys.executable, *sys.argv]),
                       "python": platform.python_version(), "torch": torch.__version__,
                       "threads": args.threads, "machine": platform.machine(),
                       "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                       "wall_seconds": time.perf_counter() - t_start},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--testbed", choices=sorted(TESTBEDS), default="minilm-l6")
    ap.add_argument("--n-calib", type=int, default=32)
    ap.add_argument("--n-probes", type=int, default=8)
    ap.add_argument("--damage-items", type=int, default=N_DAMAGE_ITEMS,
                    help="items (queries / chunks) the single-layer damage is measured on")
    ap.add_argument("--brecq-iters", type=int, default=0, help="0: round-to-nearest only")
    ap.add_argument("--brecq-plans", default="uniform,plan-qe,mixquant",
                    help="plans at 3 average bits run through BRECQ (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--measures", default="output,fisher,hessian",
                    help="data-aware tables to compute (comma-separated)")
    ap.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS),
                    help="average bit-widths of the plans (comma-separated)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the results from the cached plans only (tables and damage must "
                         "be complete)")
    args = ap.parse_args(argv)
    result = run(args)
    from _transformer_report import write

    write(result, ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
