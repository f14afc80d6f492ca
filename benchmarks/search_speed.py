"""How fast are the QE table and the MixQuant search?  ``python benchmarks/search_speed.py``

Writes ``benchmarks/results/search_speed.json`` and ``search_speed.md``. Every ratio is
measured in this one process, on this machine, with ``time.perf_counter`` (best of a few
repeats; the contenders' repeats are interleaved so that a burst of load elsewhere on the
machine hits all of them alike). Models are torchvision ResNets with random initialisation:
the work of a QE table does not depend on the values of the weights.

Measured:
- the QE table of ResNet-152 (156 layers, 60.0M weights, bits 2..8, per tensor) against a
  naive reference (mixquant_lite.tutorial.timing.naive_qe_table: qe() per layer and bit,
  mean of squares) and against one read of all weights (``sum(w*w)`` per layer);
- the same with ``compiled=True`` (the opt-in ``torch.compile`` path), compile time apart;
- per channel against per tensor; a 10-QEM sweep against one search (table + rule);
- time against weight count across ResNet-18/34/50/101/152 (R^2 of a linear fit);
- extra peak memory of the table (and of the naive reference) in a fresh child process,
  against the size of the largest layer.

``--default-experience`` measures only what a new user gets (torch's default threads, with and
without numba, idle and beside a competing busy process, next to the tuned one-thread figure):
``search_speed_default.{json,md}``.

Options: ``--quick`` (ResNet-18/34 only, fewer repeats: a smoke test), ``--device cuda``
(time on a GPU; writes ``search_speed_cuda.{json,md}``), ``--no-compile``, ``--threads N``,
``--out DIR``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from mixquant_lite import _qe_kernels
from mixquant_lite.layers import quantizable_layers
from mixquant_lite.search import mixquant, sweep
from mixquant_lite.table import qe_table
from mixquant_lite.tutorial.timing import naive_qe_table as naive_table

RESULTS = Path(__file__).resolve().parent / "results"
BITS = tuple(range(2, 9))
MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


def one_read(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return sum(torch.sum(m.weight * m.weight).item() for _, m in quantizable_layers(model))


def _numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.__version__


def eager_table(model: torch.nn.Module, **kw):
    """``qe_table`` with the fused kernel switched off: the eager torch path."""
    old = os.environ.get("MIXQUANT_NO_NUMBA")
    os.environ["MIXQUANT_NO_NUMBA"] = "1"
    try:
        return qe_table(model, **kw)
    finally:
        if old is None:
            del os.environ["MIXQUANT_NO_NUMBA"]
        else:
            os.environ["MIXQUANT_NO_NUMBA"] = old


def roofline(model: torch.nn.Module, bits=BITS, repeats: int = 5) -> dict:
    """What one CPU thread sustains against what the QE table needs, measured now.

    Traffic: the table reads each float32 weight twice from memory (the min/max pass, the fused
    pass), 8 bytes per weight. Work: per weight and bit-width, one multiply, round,
    (clamp), multiply, subtract, square and add: ``len(bits)`` "element-bits" per weight.
    Sustained rates: a numpy sum over a buffer as large as the model's weights (read bandwidth,
    no cache reuse) and the fused kernel on one L1-resident block repeated (compute rate).
    The bound is the larger of traffic / bandwidth and work / compute rate; the measured
    single-thread table time is compared with it.
    """
    minmax, kern = _qe_kernels._compiled()
    xs = [m.weight.detach().numpy() for _, m in quantizable_layers(model)]
    n = sum(x.size for x in xs)
    nb = len(bits)
    big = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    dst = np.empty_like(big)
    blk = big[: 4 * _qe_kernels.BLOCK].copy()  # 16 KiB: stays in L1
    scale = np.full((nb, 1), 0.05, np.float32)
    inv = (np.float32(1) / scale).astype(np.float32)
    lo, hi = np.full((nb, 1), -1e4, np.float32), np.full((nb, 1), 1e4, np.float32)
    out = np.zeros((nb, 1))
    mn1, mx1 = np.empty(1, np.float32), np.empty(1, np.float32)
    reps_blk = max(1, n // blk.size // 4)  # a quarter of the model's element-bits

    def in_cache():
        for _ in range(reps_blk):
            kern(blk, scale, inv, lo, hi, np.zeros(1, bool), out, False)

    in_cache()  # compiled before timing
    t = best_of({
        "sum": lambda: big.sum(),
        "copy": lambda: np.copyto(dst, big),
        "minmax": lambda: [minmax(x.reshape(-1), mn1, mx1) for x in xs],
        "in_cache": in_cache,
        "table_1thread": lambda: _qe_kernels.table_sse(
            [(nm, m.weight) for nm, m in quantizable_layers(model)], tuple(bits), False, 1),
    }, repeats, "cpu")
    read_bw = 4 * n / t["sum"]
    copy_bw = 8 * n / t["copy"]
    rate = reps_blk * blk.size * nb / t["in_cache"]  # element-bits per second, in L1
    mem_s, compute_s = 8 * n / read_bw, n * nb / rate
    return {
        "weights": n, "bytes_per_weight": 8, "element_bits_per_weight": nb,
        "read_gb_s": read_bw / 1e9, "copy_gb_s": copy_bw / 1e9,
        "in_cache_ns_per_element_bit": 1e9 / rate,
        "memory_bound_s": mem_s, "compute_bound_s": compute_s,
        "bound_s": max(mem_s, compute_s),
        "minmax_1thread_s": t["minmax"], "table_1thread_s": t["table_1thread"],
        "table_1thread_over_bound": t["table_1thread"] / max(mem_s, compute_s),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Best wall time of each callable; repeats interleaved across the callables."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, f in fns.items():
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least-squares ``y = a x + b``; returns ``(a, b, R^2)``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    a, b = np.polyfit(x, y, 1)
    ss_res = float(((y - (a * x + b)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), 1.0 - ss_res / ss_tot


_MEM_CHILD = r"""
import gc, json, sys, torch, torchvision
from mixquant_lite.table import qe_table
from mixquant_lite.tutorial.timing import naive_qe_table as naive_table

def status(key):  # kB, from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

torch.manual_seed(0)
m = torchvision.models.resnet152(weights=None).eval()
qe_table(m, bits=(8,))  # imports and first-call allocations out of the way
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
before = status("VmRSS")
{call}
print(json.dumps({{"extra_peak_kib": status("VmHWM") - before}}))
"""


def extra_peak_mib(call: str) -> float | None:
    """Peak RSS growth (MiB) of ``call`` in a fresh process that already holds ResNet-152."""
    code = _MEM_CHILD.format(bench_dir=str(Path(__file__).resolve().parent), call=call)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["extra_peak_kib"] / 1024
    except Exception as e:  # keep the timings even if this measurement fails
        print(f"memory measurement failed: {e}", file=sys.stderr)
        return None


def default_experience(model_name: str, calls: int, out: Path) -> dict:
    """The QE table as a new user gets it: torch's default threads, with and without numba
    (``MIXQUANT_NO_NUMBA=1`` forces the eager path), on the machine as it is ("idle") and with a
    competing process spinning on one core ("busy"); beside the tuned setting (one torch thread,
    numba). Wall and CPU seconds of ``calls`` consecutive calls each (after one warm-up call),
    measured in this one process. Writes ``search_speed_default.{json,md}``."""
    model = build(model_name, "cpu")
    default_threads = torch.get_num_threads()
    rows = []

    def run(label: str, threads: int, numba: bool, busy: bool) -> None:
        torch.set_num_threads(threads)
        fn = (lambda: qe_table(model)) if numba else (lambda: eager_table(model))
        spin = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None)
        try:
            fn()  # warm-up (numba compiles or loads its cache)
            walls, cpus = [], []
            for _ in range(calls):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                walls.append(round(time.perf_counter() - t0, 3))
                cpus.append(round(time.process_time() - c0, 3))
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
        rows.append({"setting": label, "torch_threads": threads, "numba": numba and
                     _qe_kernels.available(), "competing_process": busy,
                     "wall_s": walls, "cpu_s": cpus,
                     "load_average_1min": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)

    for busy in (False, True):
        for numba in (True, False):
            run("default" + (", busy" if busy else ""), default_threads, numba, busy)
        run("tuned (1 thread)" + (", busy" if busy else ""), 1, True, busy)
    torch.set_num_threads(default_threads)
    res = {"benchmark": "search_speed default experience", "model": model_name,
           "numba": _numba_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "default_threads": default_threads, "calls": calls, "rows": rows,
           "command": "python benchmarks/search_speed.py --default-experience"}
    lines = [f"# QE table of {model_name}: the default experience", "",
             f"`{res['command']}` -- torch {res['torch']}, numba {res['numba']}, "
             f"{res['cpu_count']} cores, torch's default threads {default_threads}. Each cell: "
             f"{calls} consecutive calls after a warm-up call, wall seconds (CPU seconds of this "
             "process). busy: another process spins on one core meanwhile. Without numba: "
             "`MIXQUANT_NO_NUMBA=1`, the eager torch path a `pip install` without the `fast` "
             "extra gets.", "",
             "| setting | threads | numba | wall s | CPU s | load avg (1 min) |",
             "|---|---:|---|---|---|---:|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['torch_threads']} | {'yes' if r['numba'] else 'no'}"
                     f" | {' / '.join(map(str, r['wall_s']))} | "
                     f"{' / '.join(map(str, r['cpu_s']))} | {r['load_average_1min']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_speed_default.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "search_speed_default.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default-experience", action="store_true",
                    help="only the default-settings table (threads, numba, busy machine)")
    ap.add_argument("--quick", action="store_true", help="small models, few repeats")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled=True timings")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = ap.parse_args(argv)
    if args.default_experience:
        default_experience("resnet34" if args.quick else "resnet152", 3, args.out)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    big = "resnet34" if args.quick else "resnet152"
    models = MODELS[:2] if args.quick else MODELS
    reps = 2 if args.quick else 5
    res: dict = {
        "env": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_num_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
            "loadavg_start": os.getloadavg(),
            "fused_kernel": _qe_kernels.available() and dev == "cpu",
            "numba": _numba_version(),
        }
    }
    print(json.dumps(res["env"]))

    # ---- ResNet-152: table vs naive reference vs one read
    model = build(big, dev)
    named = quantizable_layers(model)
    n_weights = sum(m.weight.numel() for _, m in named)
    largest = max(m.weight.numel() for _, m in named)
    res["model"] = {"name": big, "layers": len(named), "weights": n_weights,
                    "largest_layer_weights": largest, "bits": list(BITS)}
    t0 = time.perf_counter()
    qe_table(model)  # warm-up (the fused kernel compiles, or loads from numba's disk cache)
    res["first_call_s"] = time.perf_counter() - t0
    ref = np.array(naive_table(model))
    got = qe_table(model).values
    got_eager = eager_table(model).values
    res["max_rel_diff_vs_naive"] = float(np.abs(got / ref - 1).max())
    res["max_rel_diff_eager_vs_naive"] = float(np.abs(got_eager / ref - 1).max())
    res["max_rel_diff_fused_vs_eager_per_channel"] = float(np.abs(
        qe_table(model, per_channel=True).values
        / eager_table(model, per_channel=True).values - 1).max())
    t = best_of({
        "naive": lambda: naive_table(model),
        "table": lambda: qe_table(model),
        "table_eager": lambda: eager_table(model),
        "table_per_channel": lambda: qe_table(model, per_channel=True),
        "one_read": lambda: one_read(model),
    }, 3 if not args.quick else 2, dev)
    t.update(best_of({
        "table": lambda: qe_table(model),
        "table_eager": lambda: eager_table(model),
        "table_per_channel": lambda: qe_table(model, per_channel=True),
        "table_eager_per_channel": lambda: eager_table(model, per_channel=True),
        "one_read": lambda: one_read(model),
    }, reps, dev))
    if res["env"]["fused_kernel"]:
        res["roofline"] = roofline(model, repeats=reps)
        res["roofline"]["naive_over_bound"] = t["naive"] / res["roofline"]["bound_s"]

    if not args.no_compile:
        t0 = time.perf_counter()
        qe_table(model, compiled=True)
        qe_table(model, per_channel=True, compiled=True)
        res["compile_first_call_s"] = time.perf_counter() - t0
        got_c = qe_table(model, compiled=True).values
        res["max_rel_diff_compiled_vs_eager"] = float(np.abs(got_c / got - 1).max())
        t.update(best_of({
            "table_compiled": lambda: qe_table(model, compiled=True),
            "table_compiled_per_channel": lambda: qe_table(model, per_channel=True,
                                                           compiled=True),
        }, reps, dev))

    # ---- search: one (table + rule) vs a 10-QEM sweep on the one table
    qems = list(np.logspace(0, 4, 10))
    table = qe_table(model)
    t.update(best_of({
        "one_search": lambda: mixquant(qe_table(model), 100.0),
        "sweep_10": lambda: sweep(qe_table(model), qems),
        "rule_only": lambda: mixquant(table, 100.0),
        "sweep_10_rule_only": lambda: sweep(table, qems),
    }, reps, dev))
    res["seconds"] = t
    model = table = None  # free ResNet-152 before the scaling runs
    gc.collect()

    # ---- scaling with the weight count (all models held at once, repeats interleaved)
    zoo = {name: build(name, dev) for name in models}
    fns = {}
    for name, m in zoo.items():
        qe_table(m)
        fns[f"{name}/table_s"] = lambda m=m: qe_table(m)
        if not args.no_compile:
            qe_table(m, compiled=True)
            fns[f"{name}/table_compiled_s"] = lambda m=m: qe_table(m, compiled=True)
    tt = best_of(fns, 5 if not args.quick else 2, dev)
    rows = []
    for name, m in zoo.items():
        n = sum(mm.weight.numel() for _, mm in quantizable_layers(m))
        rows.append({"model": name, "weights": n,
                     **{k.split("/")[1]: v for k, v in tt.items() if k.startswith(name + "/")}})
        print(rows[-1], flush=True)
    zoo = fns = None
    gc.collect()
    res["scaling"] = rows
    for key in ("table_s", "table_compiled_s"):
        if key in rows[0]:
            a, b, r2 = linear_fit([r["weights"] for r in rows], [r[key] for r in rows])
            res[f"scaling_fit_{key}"] = {"ns_per_weight": a * 1e9, "intercept_s": b, "r2": r2}

    # ---- memory (CPU only: peak RSS of a child process)
    if dev == "cpu" and not args.quick:
        res["memory_mib"] = {
            "largest_layer": largest * 4 / 2**20,
            "table_extra_peak": extra_peak_mib("qe_table(m)"),
            "table_per_channel_extra_peak": extra_peak_mib("qe_table(m, per_channel=True)"),
            "naive_extra_peak": extra_peak_mib("naive_table(m)"),
        }
    res["env"]["loadavg_end"] = os.getloadavg()

    # ---- ratios (the headline)
    r = {
        "naive_over_table": t["naive"] / t["table"],
        "naive_over_table_eager": t["naive"] / t["table_eager"],
        "per_channel_over_per_tensor_eager": t["table_eager_per_channel"] / t["table_eager"],
        "table_over_one_read": t["table"] / t["one_read"],
        "per_channel_over_per_tensor": t["table_per_channel"] / t["table"],
        "sweep10_over_one_search": t["sweep_10"] / t["one_search"],
    }
    if "table_compiled" in t:
        r["naive_over_table_compiled"] = t["naive"] / t["table_compiled"]
        r["table_compiled_over_one_read"] = t["table_compiled"] / t["one_read"]
        r["compiled_per_channel_over_per_tensor"] = (
            t["table_compiled_per_channel"] / t["table_compiled"])
    res["ratios"] = r
    print(json.dumps(res, indent=1))

    suffix = "" if dev == "cpu" else "_" + dev.split(":")[0]
    suffix += "_quick" if args.quick else ""
    suffix += "_1thread" if args.threads == 1 else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"search_speed{suffix}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / f"search_speed{suffix}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    t, r, e, mo = res["seconds"], res["ratios"], res["env"], res["model"]
    lines = [
        f"QE table speed, {mo['name']} ({mo['layers']} layers, {mo['weights'] / 1e6:.1f}M "
        f"weights, bits {mo['bits'][0]}..{mo['bits'][-1]}); {e['device']}, "
        f"{e['torch_num_threads']} torch threads, {e['cpu_count']} CPUs, torch {e['torch']}; "
        f"load average {e['loadavg_start'][0]:.1f} -> {e['loadavg_end'][0]:.1f}. "
        "Best-of wall times, one process. Default path: "
        + (f"the fused numba kernel (numba {e['numba']}; first call incl. compile or cache load "
           f"{res['first_call_s']:.1f} s)" if e.get("fused_kernel") else "eager torch") + ".",
        "",
        "| measure | target | measured |",
        "|---|---|---|",
        f"| naive reference / QE table (default) | >= 20x | "
        f"**{r['naive_over_table']:.1f}x** ({t['naive']:.2f} s / {t['table']:.3f} s) |",
        f"| naive reference / QE table (eager torch, the fallback) | -- | "
        f"{r['naive_over_table_eager']:.1f}x ({t['table_eager']:.3f} s) |",
    ]
    if "naive_over_table_compiled" not in r:
        lines.append("| QE table (`compiled=True`, opt-in) | -- | not timed (`--no-compile`) |")
    if "naive_over_table_compiled" in r:
        lines.append(
            f"| naive reference / QE table (`compiled=True`, opt-in) | >= 20x | "
            f"**{r['naive_over_table_compiled']:.1f}x** ({t['table_compiled']:.3f} s; first call "
            f"compiles: {res['compile_first_call_s']:.1f} s) |")
    lines.append(
        f"| QE table / one read of all weights (default) | <= 10x (stretch) | "
        f"{r['table_over_one_read']:.1f}x (read: {t['one_read'] * 1e3:.0f} ms) |")
    if "table_compiled_over_one_read" in r:
        lines.append(f"| QE table / one read (`compiled=True`) | <= 10x (stretch) | "
                     f"{r['table_compiled_over_one_read']:.1f}x |")
    lines.append(f"| per channel / per tensor (default) | <= 2x | "
                 f"{r['per_channel_over_per_tensor']:.2f}x (eager: "
                 f"{r['per_channel_over_per_tensor_eager']:.2f}x) |")
    if "compiled_per_channel_over_per_tensor" in r:
        lines.append(f"| per channel / per tensor (`compiled=True`) | <= 2x | "
                     f"{r['compiled_per_channel_over_per_tensor']:.2f}x |")
    lines.append(f"| 10-QEM sweep / one search (table + rule) | <= 1.1x | "
                 f"{r['sweep10_over_one_search']:.3f}x (rule alone: "
                 f"{t['rule_only'] * 1e3:.2f} ms, 10-QEM sweep alone "
                 f"{t['sweep_10_rule_only'] * 1e3:.1f} ms) |")
    for key, label in (("table_s", "default"), ("table_compiled_s", "`compiled=True`")):
        fit = res.get(f"scaling_fit_{key}")
        if fit:
            names = "/".join(x["model"].removeprefix("resnet") for x in res["scaling"])
            lines.append(f"| time vs weights, ResNet-{names} ({label}) | R^2 >= 0.98 | "
                         f"R^2 = {fit['r2']:.4f} ({fit['ns_per_weight']:.2f} ns/weight) |")
    mem = res.get("memory_mib")
    if mem and mem.get("table_extra_peak") is not None:
        lines.append(
            f"| extra peak memory (RSS) of the table | a few copies of the largest layer "
            f"({mem['largest_layer']:.1f} MiB) | {mem['table_extra_peak']:.1f} MiB "
            f"(per channel {mem['table_per_channel_extra_peak']:.1f} MiB; naive reference "
            f"{mem['naive_extra_peak']:.1f} MiB) |")
    lines.append(f"| agreement with the naive reference | -- | max rel. diff "
                 f"{res['max_rel_diff_vs_naive']:.1e} (eager "
                 f"{res['max_rel_diff_eager_vs_naive']:.1e}; default vs eager per channel "
                 f"{res['max_rel_diff_fused_vs_eager_per_channel']:.1e}) |")
    ro = res.get("roofline")
    if ro:
        lines += [
            "",
            f"Roofline, one thread, measured in the same run: the table reads "
            f"{ro['bytes_per_weight']} bytes per weight (a min/max pass, the fused pass) "
            f"and does {ro['element_bits_per_weight']} element-bits of work per weight.",
            "",
            "| sustained by this CPU (one thread) | value |",
            "|---|---|",
            f"| read bandwidth (numpy sum over {ro['weights'] / 1e6:.0f}M float32) | "
            f"{ro['read_gb_s']:.1f} GB/s (copy: {ro['copy_gb_s']:.1f} GB/s) |",
            f"| fused kernel in L1 | {ro['in_cache_ns_per_element_bit']:.3f} ns per element-bit |",
            f"| bound: memory / compute | {ro['memory_bound_s'] * 1e3:.0f} ms / "
            f"{ro['compute_bound_s'] * 1e3:.0f} ms |",
            f"| measured table, one thread (min/max alone: "
            f"{ro['minmax_1thread_s'] * 1e3:.0f} ms) | {ro['table_1thread_s'] * 1e3:.0f} ms = "
            f"{ro['table_1thread_over_bound']:.2f}x the bound |",
            f"| naive reference / bound (the most any one-thread table could reach) | "
            f"{ro['naive_over_bound']:.0f}x |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
