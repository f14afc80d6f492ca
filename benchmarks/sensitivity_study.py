"""Which layers matter? Four sensitivity measures, their cost, and the accuracy they buy.

For one shipped model (``resnet20-mnist5k`` or ``mobilenetv2-mnist5k``), all Conv2d/Linear
layers quantized per tensor with vanilla round-to-nearest (``BitPlan.apply``), float
activations, candidates 2..8 bits:

1. the sensitivity tables ``qe``, ``hessian``, ``fisher``, ``output``
   (:mod:`mixquant_lite.sensitivity`) on calibration images from the training split, each with
   its wall time (Hutchinson: probes and convergence);
2. the measured single-layer damage: each layer quantized alone at 2, 3, 4 bits, the increase
   of the mean test cross-entropy and the drop in top-1; Spearman rank correlation of each
   measure with it within each bit-width (and pooled), with a bootstrap CI over layers
   (clustered by layer when pooled);
3. at matched average bits (2.5, 3, 3.5, 4 and, where per-tensor uniform breaks, that bit-width
   and half a bit above it): uniform (integer budgets), MixQuant (the QEM that meets the budget),
   the budget plan (``plan_for_budget``) under each measure, and ``--n-random`` plans from
   random layer rankings at the same budget as the reference distribution; every comparison is
   an exact McNemar test over the 1,000 test images with a Newcombe 95% CI
   (`mixquant_lite.stats.paired_compare`).

Resumable: finished stages are cached in ``--cache-dir``; results are written to
``results/sensitivity-<model>.{json,csv,md}`` with provenance (commit, command, machine, time).

    OMP_NUM_THREADS=1 python benchmarks/sensitivity_study.py --model mobilenetv2-mnist5k
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _provenance import commit  # benchmarks/ is on sys.path when run as a script

from mixquant_lite import BitPlan, QETable, mixquant, plan_for_budget, qem_for_budget
from mixquant_lite.sensitivity import hessian, hessian_trace, sensitivity_table
from mixquant_lite.stats import paired_compare
from mixquant_lite.tutorial.stats import cluster_bootstrap_corr
from mixquant_lite.zoo.data import mnist5k
from mixquant_lite.zoo.models import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
BITS = tuple(range(2, 9))
DAMAGE_BITS = (2, 3, 4)
BUDGETS = (2.5, 3.0, 3.5, 4.0)
DATA_MEASURES = ("hessian", "fisher", "output")
RUN_ID = f"{os.getpid()}@{time.time():.0f}"  # tells this run's partial writes from earlier runs



class Cache:
    """One JSON file per stage under ``folder`` (written atomically)."""

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


@torch.no_grad()
def _score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[int], float]:
    """Per-image correctness (0/1) and the mean cross-entropy over the test images."""
    model.eval()
    logits = torch.cat([model(xb) for xb in x.split(500)])
    return (logits.argmax(1) == y).int().tolist(), float(F.cross_entropy(logits, y))


def _table_json(t: QETable) -> dict:
    return {"layers": list(t.layers), "bits": list(t.bits), "numel": [t.numel[n] for n in t.layers],
            "values": t.values.tolist(), "measure": t.measure, "per_channel": t.per_channel}


def _table_from_json(d: dict) -> QETable:
    return QETable(tuple(d["layers"]), tuple(d["bits"]), dict(zip(d["layers"], d["numel"],
                   strict=True)), np.array(d["values"]), d["per_channel"], measure=d["measure"])


def _plan_key(plan: BitPlan) -> str:
    return ",".join(str(b) for b in plan.bits.values())


def _plan_str(plan: BitPlan) -> str:
    counts: dict[int, int] = {}
    for b in plan.bits.values():
        counts[b] = counts.get(b, 0) + 1
    return " ".join(f"{b}x{c}" for b, c in sorted(counts.items(), reverse=True))


def _spearman_ci(cost: np.ndarray, damage: np.ndarray, rng: np.random.Generator,
                 n_boot: int = 2000) -> tuple[float, float, float]:
    """Spearman rho over rows, and a percentile bootstrap 95% CI resampling clusters
    (:func:`mixquant_lite.tutorial.stats.cluster_bootstrap_corr`, the package's one).

    ``cost``/``damage``: ``(L, B)``; rows are layers (clusters), columns bit-widths pooled.
    """
    clusters = np.repeat(np.arange(cost.shape[0]), cost.shape[1])
    return cluster_bootstrap_corr(cost.ravel(), damage.ravel(), clusters, n_boot=n_boot,
                                  seed=int(rng.integers(2**31)))


def measure_damage(args, cache: Cache, model, qe: QETable, x_test, y_test, fp_correct,
                   fp_loss) -> dict:
    """Each layer quantized alone at each of ``--damage-bits``: test loss increase and top-1
    drop, ``(layers, bits)`` each (cached)."""
    damage_bits = tuple(args.damage_bits)
    layers = qe.layers
    damage = cache.get("damage")
    if damage is not None and damage.get("bits", list(DAMAGE_BITS)) != list(damage_bits):
        damage = None
    if damage is None:
        t0 = time.perf_counter()
        loss_inc = np.zeros((len(layers), len(damage_bits)))
        acc_drop = np.zeros((len(layers), len(damage_bits)))
        for i, name in enumerate(layers):
            for j, b in enumerate(damage_bits):
                plan = BitPlan({name: b}, {name: qe.numel[name]})
                c, loss = _score(plan.apply(model), x_test, y_test)
                loss_inc[i, j] = loss - fp_loss
                acc_drop[i, j] = np.mean(fp_correct) - np.mean(c)
        damage = {"bits": list(damage_bits), "loss_increase": loss_inc.tolist(),
                  "top1_drop": acc_drop.tolist(), "wall_s": time.perf_counter() - t0}
        cache.put("damage", damage)
    print(f"  single-layer damage: {damage['wall_s']:.1f} s", flush=True)
    return damage


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    cache = Cache(Path(args.cache_dir) / args.model)
    model = load_pretrained(args.model)
    x_test, y_test = mnist5k("test").tensors
    xtr, ytr = mnist5k("train").tensors
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed))
    calib, calib_y = xtr[idx[: args.n_calib]].clone(), ytr[idx[: args.n_calib]].clone()

    fp_correct, fp_loss = _score(model, x_test, y_test)
    print(f"{args.model}: FP32 top-1 {np.mean(fp_correct):.4f}", flush=True)

    # 1. tables and their cost ------------------------------------------------------------
    tables: dict[str, QETable] = {}
    timing: dict[str, float] = {}
    hutch = None
    helper = args.reference_only or args.damage_only  # a helper process: no data-aware tables
    for measure in ("qe", *([] if helper else DATA_MEASURES)):
        key = f"table-{measure}-n{args.n_calib}-s{args.seed}" + (
            f"-p{args.n_probes}-h{args.hessian_images}" if measure == "hessian" else "")
        got = cache.get(key)
        if got is None:
            t0 = time.perf_counter()
            if measure == "hessian":
                nh = min(args.hessian_images, args.n_calib)
                tr = hessian_trace(model, calib[:nh], labels=calib_y[:nh],
                                   n_probes=args.n_probes, batch_size=nh, seed=args.seed)
                table = hessian(model, calib, BITS, trace=tr)
                extra = {"estimates": tr.estimates.tolist(), "n_images": tr.n_images,
                         "per_layer_probes": True}
            elif measure == "qe":
                table = sensitivity_table(model, "qe", None, BITS)
                extra = {}
            else:
                table = sensitivity_table(model, measure, calib, BITS, labels=calib_y)
                extra = {}
            got = {"table": _table_json(table), "wall_s": time.perf_counter() - t0, **extra}
            cache.put(key, got)
        tables[measure] = _table_from_json(got["table"])
        timing[measure] = got["wall_s"]
        if measure == "hessian":
            hutch = np.array(got["estimates"])
        print(f"  table {measure}: {got['wall_s']:.1f} s", flush=True)
    layers = tables["qe"].layers
    n_l = len(layers)

    def summary(rows, damage, rank_rows) -> dict:
        rel_se = hutch.std(0, ddof=1) / np.sqrt(len(hutch)) / np.abs(hutch.mean(0))
        return {
            "model": args.model,
            "fp32_top1": fp_acc,
            "calibration": f"{args.n_calib} MNIST-5k training images (seed {args.seed}), "
                           "true labels",
            "evaluation": "MNIST-5k test split (1,000 images)",
            "quantizer": "per-tensor asymmetric round-to-nearest (BitPlan.apply), float "
                         "activations, all Conv2d/Linear layers, candidates 2..8 bits",
            "wall_s_tables": timing,
            "hutchinson": {"n_probes": int(len(hutch)),
                           "n_images": min(args.hessian_images, args.n_calib),
                           "probes": "Rademacher, per layer (H_ll v_l, no cross-layer terms)",
                           "trace": hutch.mean(0).tolist(),
                           "std_error": (hutch.std(0, ddof=1) / np.sqrt(len(hutch))).tolist(),
                           "estimates": hutch.tolist(),
                           "rel_std_error_median": float(np.median(rel_se)),
                           "rel_std_error_max": float(np.max(rel_se)),
                           "n_negative": int((hutch.mean(0) < 0).sum())},
            "tables": {m: _table_json(t) for m, t in tables.items()},
            "uniform_top1": {str(b): float(np.mean(u["correct"])) for b, u in uniform.items()},
            "damage_bits": list(args.damage_bits),
            "uniform_breaks_at": max(broken) if broken else None,
            "damage": damage,
            "rank_correlation": rank_rows,
            "budgets": budgets,
            "rows": rows,
            "wall_s": time.perf_counter() - t_start,
            "complete": damage is not None,
        }

    if args.damage_only:
        measure_damage(args, cache, model, tables["qe"], x_test, y_test, fp_correct, fp_loss)
        return {}

    # 2. uniform accuracies and the budgets ----------------------------------------------------
    evals: dict[str, dict] = cache.get("evals") or {}

    def score_plan(plan: BitPlan) -> dict:
        k = _plan_key(plan)
        if k not in evals:  # another process may have scored it meanwhile
            evals.update(cache.get("evals") or {})
        if k not in evals:
            c, loss = _score(plan.apply(model), x_test, y_test)
            evals.update(cache.get("evals") or {})  # merge, so concurrent runs keep both
            evals[k] = {"correct": c, "loss": loss}
            cache.put("evals", evals)
        return evals[k]

    uniform = {b: score_plan(BitPlan.uniform(tables["qe"], b)) for b in BITS}
    fp_acc = float(np.mean(fp_correct))
    # where per-tensor uniform breaks: the widest bit-width losing > 5 points, and the next
    broken = [b for b in BITS if np.mean(uniform[b]["correct"]) < fp_acc - 0.05]
    budgets = list(dict.fromkeys(args.budgets))  # in the given order
    print(f"  uniform top-1: {({b: round(np.mean(u['correct']), 3) for b, u in uniform.items()})}"
          f"; budgets {budgets}", flush=True)

    rows = []
    for avg in budgets:
        plans: dict[str, BitPlan] = {}
        if float(avg).is_integer():
            plans["uniform"] = BitPlan.uniform(tables["qe"], int(avg))
        try:
            qem = qem_for_budget(tables["qe"], avg_bits=avg)
            plans["MixQuant"] = mixquant(tables["qe"], qem)
        except ValueError as e:
            print(f"  MixQuant at {avg}: {e}", flush=True)
        for m in tables:
            plans[f"budget[{m}]"] = plan_for_budget(tables[m], avg_bits=avg)
        for s in range(args.n_random):
            r = np.random.default_rng(1000 + s)
            sens = np.exp(r.normal(0.0, 2.0, n_l))
            numel = tables["qe"].numel_array().astype(float)
            vals = sens[:, None] * numel[:, None] * 4.0 ** -np.asarray(BITS, float)[None, :]
            rt = QETable(layers, BITS, dict(tables["qe"].numel), vals, False, measure="random")
            plans[f"random#{s}"] = plan_for_budget(rt, avg_bits=avg)
        scored = {k: score_plan(p) for k, p in plans.items()}
        rand_acc = np.array([np.mean(v["correct"]) for k, v in scored.items()
                             if k.startswith("random")])
        for k, p in plans.items():
            if k.startswith("random"):
                continue
            c = scored[k]["correct"]
            acc = float(np.mean(c))
            row = {"budget": avg, "method": k, "avg_bits": p.avg_bits, "top1": acc,
                   "test_loss": scored[k]["loss"], "plan": _plan_str(p),
                   "random_pctl": float((rand_acc < acc).mean() + 0.5 * (rand_acc == acc).mean())}
            for ref in ("uniform", "MixQuant", "budget[qe]"):
                if ref in plans and ref != k:
                    t = paired_compare(c, scored[ref]["correct"], labels=(k, ref))
                    row[f"vs {ref}"] = (f"{t.verdict} {t.diff:+.1f} "
                                        f"[{t.ci_low:+.1f}, {t.ci_high:+.1f}] "
                                        f"p={t.p_value:.2g}")
            rows.append(row)
        rows.append({"budget": avg, "method": f"random x{len(rand_acc)}",
                     "avg_bits": float(np.mean([p.avg_bits for k, p in plans.items()
                                                if k.startswith("random")])),
                     "top1": float(np.mean(rand_acc)),
                     "plan": f"top-1 min {100 * rand_acc.min():.1f} / median "
                             f"{100 * np.median(rand_acc):.1f} / max {100 * rand_acc.max():.1f}"})
        print(f"  budget {avg}: " + ", ".join(f"{r['method']} {r['top1']:.3f}" for r in rows
                                               if r["budget"] == avg), flush=True)
        if not args.reference_only:
            write(summary(rows, None, None), args)  # partial results after each budget
    if args.reference_only:
        return {}

    # 3. single-layer damage and rank correlations -----------------------------------------
    damage_bits = tuple(args.damage_bits)
    damage = measure_damage(args, cache, model, tables["qe"], x_test, y_test, fp_correct,
                            fp_loss)
    loss_inc = np.array(damage["loss_increase"])
    rng = np.random.default_rng(args.seed)
    cols = [BITS.index(b) for b in damage_bits]
    rank_rows = []
    costs = {"qe (per weight)": tables["qe"].values,
             "qe x numel (budget cost)": tables["qe"].cost_matrix()}
    costs.update({m: tables[m].cost_matrix() for m in DATA_MEASURES})
    for name, cost in costs.items():
        for j, b in enumerate(damage_bits):
            rho, lo, hi = _spearman_ci(cost[:, [cols[j]]], loss_inc[:, [j]], rng)
            rank_rows.append({"measure": name, "bits": str(b), "spearman": rho,
                              "ci_low": lo, "ci_high": hi})
        if len(cols) == 1:
            continue
        rho, lo, hi = _spearman_ci(cost[:, cols], loss_inc, rng)
        rank_rows.append({"measure": name, "bits": "pooled", "spearman": rho,
                          "ci_low": lo, "ci_high": hi})

    result = summary(rows, damage, rank_rows)
    write(result, args)
    return result


def write(result: dict, args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"sensitivity-{args.model}"
    earlier: list[float] = []
    if stem.with_suffix(".json").exists():  # a resumed run: keep what the earlier runs took
        old = json.loads(stem.with_suffix(".json").read_text()).get("provenance", {})
        earlier = old.get("earlier_runs_wall_s", [])
        if old.get("run_id") != RUN_ID:
            earlier = earlier + [old.get("wall_s_this_run")]
    result["provenance"] = {
        "command": "python benchmarks/sensitivity_study.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
                   + f", {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} thread(s)",
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s_this_run": result["wall_s"],
        "earlier_runs_wall_s": [w for w in earlier if w is not None],
        "run_id": RUN_ID,
    }
    df = pd.DataFrame(result["rows"])
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.5g")
    tmp = stem.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(stem.with_suffix(".json"))
    pv = result["provenance"]
    h = result["hutchinson"]
    md = [f"# Which layers matter: {result['model']}", "",
          f"- command: `{pv['command']}`", f"- git commit: {pv['commit']}; {pv['machine']}",
          f"- {pv['date_utc']}; wall time of this run {pv['wall_s_this_run']:.0f} s"
          + (f" (resumed from cached stages; earlier runs {pv['earlier_runs_wall_s']} s)"
             if pv["earlier_runs_wall_s"] else ""),
          f"- FP32 top-1 {100 * result['fp32_top1']:.1f}%; {result['evaluation']}; calibration: "
          f"{result['calibration']}", f"- quantizer: {result['quantizer']}", "",
          "## Cost of each table (wall s)", "",
          "| measure | wall s |", "|---|---:|"]
    md += [f"| {m} | {s:.2f} |" for m, s in result["wall_s_tables"].items()]
    md += ["", f"Hutchinson: {h['n_probes']} Rademacher probes per layer on {h['n_images']} "
           "images; "
           "relative standard error of the per-layer trace: median "
           f"{h['rel_std_error_median']:.2f},"
           f" max {h['rel_std_error_max']:.2f}; {h['n_negative']} negative estimate(s) "
           "clipped to 0.", "",
           "Uniform top-1 (%): " + ", ".join(f"W{b} {100 * v:.1f}"
                                             for b, v in result["uniform_top1"].items()), "",
           "## Rank correlation with measured single-layer damage", "",
           "Spearman rho between each measure's per-layer cost and the increase in test "
           "cross-entropy when that layer alone is quantized; 95% bootstrap CI over layers "
           "(pooled: clustered by layer).", "",
           "| measure | bits | rho | 95% CI |", "|---|---|---:|---|"]
    md += [f"| {r['measure']} | {r['bits']} | {r['spearman']:+.2f} | "
           f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] |" for r in result["rank_correlation"] or []]
    if not result["complete"]:
        md += ["", "(partial results: the single-layer damage stage has not run yet)"]
    md += ["", "## Accuracy at matched average bits (vanilla round-to-nearest)", "",
           "Verdicts: exact McNemar test over the 1,000 test images (p < 0.05), difference in "
           "points with a Newcombe 95% CI (stats.paired_compare). random_pctl: share of the "
           "random plans at that budget with lower top-1 (ties count half).", ""]
    cols = ["budget", "method", "avg_bits", "top1", "random_pctl", "vs uniform", "vs MixQuant",
            "vs budget[qe]", "plan"]
    cols = [c for c in cols if c in df.columns]
    md.append("| " + " | ".join(cols) + " |")
    md.append("|" + "|".join("---" for _ in cols) + "|")
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float) and np.isnan(v):
                cells.append("")
            elif c == "top1":
                cells.append(f"{100 * v:.1f}")
            elif c in ("avg_bits", "random_pctl"):
                cells.append(f"{v:.3f}" if c == "avg_bits" else f"{v:.2f}")
            else:
                cells.append(str(v))
        md.append("| " + " | ".join(cells) + " |")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {stem}.{{json,csv,md}}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20-mnist5k")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--n-probes", type=int, default=16)
    ap.add_argument("--hessian-images", type=int, default=64,
                    help="the first this many calibration images define the Hessian")
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS),
                    help="average bits at which the plans are compared")
    ap.add_argument("--damage-bits", type=int, nargs="+", default=list(DAMAGE_BITS),
                    help="bit-widths of the single-layer damage measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--damage-only", action="store_true",
                    help="only measure the single-layer damage into the cache (a helper process)")
    ap.add_argument("--reference-only", action="store_true",
                    help="only score the data-free plans (uniform, MixQuant, QE budget, random) "
                         "into the cache, e.g. in a second process while the tables are computed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(ROOT / "results"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "mixquant-lite"
                                               / "sensitivity"))
    args = ap.parse_args(argv)
    if args.n_random < 1 or args.n_probes < 2 or not 1 <= args.n_calib <= 4000:
        ap.error("need --n-random >= 1, --n-probes >= 2 and --n-calib in 1..4000")
    torch.set_num_threads(args.threads)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
