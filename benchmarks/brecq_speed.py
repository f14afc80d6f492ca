"""BRECQ speed: optimisation steps per second for every reconstruction unit, against its floor.

    python benchmarks/brecq_speed.py        # both shipped CNNs, 1 thread and torch's default
    python benchmarks/brecq_speed.py --models resnet18 --device cuda --threads 0 \
        --out brecq_speed-resnet18-cuda

Runs :func:`mixquant_lite.brecq` with every setting of ``--settings`` (default W3A32, W3A8,
W4A4; first/last layer 8 bits), ``--iters`` steps per unit (batch 32, the recipe's),
``--repeats`` times, and reports, per unit, the best steps per second of the optimisation loop
(input/target capture excluded) and the time the recipe's 20,000 steps per unit would take at
that speed. In the same process it times the floor of a step: one plain forward and backward
pass of each (BN-folded, float) unit on a batch of 32 of its captured inputs (gradients of the
weights only, no quantizer, no optimiser), and reports step / floor per unit. A second floor,
``floor+dx``, also takes the gradient of the unit's input: a step that learns the step size of
the unit's input quantizer needs it, so it is the floor of a step with activation quantization.
Speed does not depend on the weights, so a random model is used when a trained checkpoint is
missing (and always for ResNet-18, ``weights=None``, 224x224 inputs).

Each thread count of ``--threads`` (``0``: torch's default) is measured in this one process,
one after the other. Writes ``benchmarks/results/<out>.json`` and ``.md`` with the machine,
threads and load average at the start (other processes sharing the cores slow it down; the
ratios are measured in one process, interleaved, so that a burst of load hits steps and floor
alike).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _provenance import commit  # noqa: E402

from mixquant_lite.recon import block_recon, brecq  # noqa: E402
from mixquant_lite.recon.block_recon import _rec_loss, capture, find_units  # noqa: E402
from mixquant_lite.recon.folding import fold_bn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE_ITERS = 20000
TARGET = {"act": 2.0, "no_act": 1.5}  # step / floor for blocks with / without act quantization


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _model_and_data(name: str, n: int, device: str):
    gen = torch.Generator().manual_seed(0)
    if name in ("resnet20", "mobilenetv2"):
        from mixquant_lite.zoo.models import data_dir, load_pretrained, mobilenetv2_mnist, resnet20

        ckpt = f"{name}-mnist5k"
        if (data_dir() / f"{ckpt}.pt").is_file():
            model, source = load_pretrained(ckpt), "trained checkpoint"
        else:
            model = (resnet20() if name == "resnet20" else mobilenetv2_mnist()).eval()
            source = "random weights"
        x = torch.randn(n, 1, 28, 28, generator=gen)
    elif name == "resnet18":
        import torchvision

        model, source = torchvision.models.resnet18(weights=None).eval(), "random weights"
        x = torch.randn(n, 3, 224, 224, generator=gen)
    else:
        raise SystemExit(f"--models: resnet20, mobilenetv2 or resnet18, got {name!r}")
    return model.to(device), x.to(device), source


def _parse_setting(s: str) -> tuple[int, int | None]:
    """``"W3A8"`` -> ``(3, 8)``; ``A32`` means float activations (``None``)."""
    w, a = s.upper().lstrip("W").split("A")
    return int(w), (None if int(a) >= 32 else int(a))


def floor_seconds(model: torch.nn.Module, x: torch.Tensor, steps: int,
                  batch: int = 32) -> dict[str, tuple[float, float, float, float]]:
    """Seconds of one plain forward + backward pass of every unit (the floor of a BRECQ step):
    ``{unit: (wall, cpu of weights only, wall, cpu of weights and input)}``.

    Each unit of the BN-folded float model runs on ``batch`` of its own captured inputs against
    its float output with BRECQ's loss; the gradients of its weights (and, in the second figure,
    of its input) are taken with ``torch.autograd.grad`` (no quantizer, no optimiser, no
    sampling). Mean over ``steps``.
    """
    folded = fold_bn(model)
    modules = dict(folded.named_modules())
    dev = x.device
    out: dict[str, tuple[float, float, float, float]] = {}
    for u in find_units(folded):
        m = modules[u.name]
        inp = capture(folded, m, x[:batch], output=False)
        with torch.no_grad():
            target = m(inp)
        params = list(m.parameters())
        for p in params:
            p.requires_grad_(True)
        times: list[tuple[float, float]] = []
        for with_dx in (False, True):
            xin = inp.clone().requires_grad_(with_dx)
            wrt = [*params, xin] if with_dx else params

            def step(m=m, xin=xin, target=target, wrt=wrt):
                torch.autograd.grad(_rec_loss(m(xin), target), wrt)

            for _ in range(3):  # warm-up
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(((time.perf_counter() - t0) / steps,
                          (time.process_time() - c0) / steps))
        out[u.name] = (*times[0], *times[1])
    return out


class _LoopClock:
    """Wraps ``block_recon._optimise`` to record, per unit, the loop's wall and CPU seconds per
    step (CPU time of the process: robust against other processes on the cores with one
    thread; with several it also counts the threads' spinning)."""

    def __init__(self) -> None:
        self.per_step: dict[str, tuple[float, float]] = {}
        self._orig = block_recon._optimise

    def __enter__(self) -> _LoopClock:
        def wrapped(unit_module, quantizers, acts, inputs, targets, config, n, gen, desc):
            t0, c0 = time.perf_counter(), time.process_time()
            self._orig(unit_module, quantizers, acts, inputs, targets, config, n, gen, desc)
            self.per_step[desc.removeprefix("BRECQ ")] = (
                (time.perf_counter() - t0) / n, (time.process_time() - c0) / n)

        block_recon._optimise = wrapped
        return self

    def __exit__(self, *exc) -> None:
        block_recon._optimise = self._orig


def measure(model_name: str, args, settings: list[str]) -> dict:
    """All settings of one model at the current thread count: per unit step and floor times
    (wall and CPU, best of the repeats) and their ratios."""
    model, x, source = _model_and_data(model_name, args.n_calib, args.device)
    # Warm-up (thread pool, kernel selection, CUDA context): not timed.
    brecq(model, x, 4, act_bits=4, iters=5, n_calib=args.n_calib, progress=False)
    inf = float("inf")
    step: dict[str, dict[str, list[float]]] = {k: {} for k in settings}
    walls: dict[str, float] = {}
    floor: dict[str, list[float]] = {}
    rep = None
    for _ in range(args.repeats):
        for key in settings:  # interleaved: a burst of load hits every setting alike
            wbits, act = _parse_setting(key)
            t0 = time.perf_counter()
            with _LoopClock() as clock:
                _, rep = brecq(model, x, wbits, act_bits=act, iters=args.iters,
                               n_calib=args.n_calib, progress=False)
            walls[key] = min(walls.get(key, inf), time.perf_counter() - t0)
            # Best of the repeats per unit: other processes on the cores only ever slow it down.
            for name, (w, c) in clock.per_step.items():
                old = step[key].get(name, [inf, inf])
                step[key][name] = [min(w, old[0]), min(c, old[1])]
        for name, secs in floor_seconds(model, x, args.iters).items():
            floor[name] = [min(a, b) for a, b in zip(secs, floor.get(name, [inf] * 4),
                                                     strict=True)]
    assert rep is not None
    units = []
    for u in rep.units:
        f = floor[u.name]
        row = {"unit": u.name, "kind": u.kind, "weights": sum(rep.numel[n] for n in u.layers),
               "floor_ms": round(f[0] * 1e3, 3), "floor_cpu_ms": round(f[1] * 1e3, 3),
               "floor_dx_ms": round(f[2] * 1e3, 3), "floor_dx_cpu_ms": round(f[3] * 1e3, 3)}
        for key in settings:
            w, c = step[key].get(u.name, (None, None))  # None: not optimised (the stem)
            row[f"it_per_s_{key}"] = round(1.0 / w, 2) if w else 0.0
            row[f"step_over_floor_{key}"] = round(w / f[0], 2) if w else None
            row[f"step_over_floor_cpu_{key}"] = round(c / f[1], 2) if c else None
        units.append(row)
    totals = {}
    for key in settings:
        recipe = sum(RECIPE_ITERS * w for w, _ in step[key].values())
        totals[key] = {"wall_s": round(walls[key], 1), "recipe_estimate_s": round(recipe, 0),
                       "recipe_estimate_h": round(recipe / 3600, 2)}
    worst: dict[str, dict[str, float | None]] = {}
    for key in settings:
        worst[key] = {}
        for col in ("step_over_floor", "step_over_floor_cpu"):
            vals = [r[f"{col}_{key}"] for r in units
                    if r["kind"] == "block" and r[f"{col}_{key}"] is not None]
            worst[key][col] = max(vals) if vals else None
    return {"model": model_name, "weights": source, "torch_threads": torch.get_num_threads(),
            "units": units, "totals": totals, "worst_block_step_over_floor": worst}


def _cell(v: float | None, target: float) -> str:
    return "--" if v is None else f"{v:.2f}" + ("" if v <= target else " (over)")


def _markdown(result: dict, settings: list[str]) -> list[str]:
    lines = [
        f"# BRECQ speed on {result['device']} ({result['device_name']})",
        "",
        f"`{result['command'].strip()}` -- commit {result['commit']}, torch {result['torch']}, "
        f"{result['cpu_cores']} cores, 1-min load average {result['load_average_1min_at_start']}"
        f" at the start. {result['settings']['iters_per_unit']} steps per unit, batch 32, "
        f"{result['settings']['n_calib']} calibration samples, first/last layer 8 bits; best of "
        f"{result['settings']['repeats']} runs per unit (wall s: the fastest whole run).",
        "",
        "Floor: one plain forward + backward pass of the float unit, batch 32, same process. "
        "step / floor in CPU time of the process (robust against other processes with one "
        "thread) and in wall time. floor+dx also takes the gradient of the unit's input (what "
        "learning the input quantizer's step needs). Target: step / floor <= "
        f"{TARGET['act']} for every block with activation quantization, <= {TARGET['no_act']} "
        "without.",
        "",
        "## Worst block, step / floor (CPU time; wall time in brackets)",
        "",
        "| model | threads | " + " | ".join(settings) + " |",
        "|---|---:|" + "---:|" * len(settings),
    ]
    for run in result["runs"]:
        cells = []
        for k in settings:
            w = run["worst_block_step_over_floor"][k]
            tgt = TARGET["no_act" if k.endswith("A32") else "act"]
            wall = w["step_over_floor"]
            cells.append(_cell(w["step_over_floor_cpu"], tgt)
                         + ("" if wall is None else f" ({wall:.2f})"))
        lines.append(f"| {run['model']} | {run['torch_threads']} | " + " | ".join(cells) + " |")
    for run in result["runs"]:
        lines += ["", f"## {run['model']}, {run['torch_threads']} thread(s), weights: "
                  f"{run['weights']}", "",
                  "| unit | kind | weights | floor ms | floor+dx ms | "
                  + " | ".join(f"it/s {k}" for k in settings) + " | "
                  + " | ".join(f"step/floor {k} cpu (wall)" for k in settings) + " |",
                  "|---|---|---:|---:|---:|" + "---:|" * (2 * len(settings))]
        for r in run["units"]:
            ratios = []
            for k in settings:
                c, w = r[f"step_over_floor_cpu_{k}"], r[f"step_over_floor_{k}"]
                ratios.append("--" if c is None else f"{c:.2f} ({w:.2f})")
            lines.append(
                f"| {r['unit']} | {r['kind']} | {r['weights']:,} | {r['floor_ms']:.2f} | "
                f"{r['floor_dx_ms']:.2f} | "
                + " | ".join(f"{r[f'it_per_s_{k}']:.1f}" for k in settings) + " | "
                + " | ".join(ratios) + " |")
        lines += ["", "| setting | wall s (this run) | recipe estimate (20,000 steps/unit) |",
                  "|---|---:|---:|"]
        for k, t in run["totals"].items():
            lines.append(f"| {k} | {t['wall_s']} | {t['recipe_estimate_s']:.0f} s "
                         f"({t['recipe_estimate_h']} h) |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="resnet20,mobilenetv2",
                    help="comma-separated: resnet20, mobilenetv2, resnet18")
    ap.add_argument("--settings", default="W3A32,W3A8,W4A4",
                    help="comma-separated WxAy (A32: float activations)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=100, help="steps per unit (default 100)")
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--threads", default="1,0",
                    help="comma-separated torch thread counts, 0 = torch's default (default 1,0)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting; best it/s per unit")
    ap.add_argument("--out", default="brecq_speed", help="file stem under benchmarks/results/")
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        _parse_setting(s)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    default_threads = torch.get_num_threads()
    runs: list[dict] = []
    for t in (int(v) for v in args.threads.split(",")):
        torch.set_num_threads(t or default_threads)
        for name in args.models.split(","):
            runs.append(measure(name.strip(), args, settings))
            print(json.dumps({k: runs[-1][k] for k in ("model", "torch_threads",
                                                       "worst_block_step_over_floor")}),
                  flush=True)
            torch.set_num_threads(default_threads)
            _write(args, settings, runs, load_before, default_threads)  # after every run
            torch.set_num_threads(t or default_threads)
    torch.set_num_threads(default_threads)
    return _write(args, settings, runs, load_before, default_threads, echo=True)


def _write(args, settings: list[str], runs: list[dict], load_before: float,
           default_threads: int, echo: bool = False) -> dict:
    """Write ``<out>.json`` / ``.md`` with the runs measured so far."""
    device = args.device
    device_name = (torch.cuda.get_device_name(torch.device(device))
                   if device.startswith("cuda") else _cpu_name())
    result = {
        "benchmark": "brecq_speed", "device": device, "device_name": device_name,
        "cpu_cores": os.cpu_count(), "default_threads": default_threads,
        "load_average_1min_at_start": round(load_before, 2), "torch": torch.__version__,
        "commit": commit(),
        "settings": {"settings": settings, "iters_per_unit": args.iters,
                     "n_calib": args.n_calib, "batch_size": 32, "first_last_bits": 8,
                     "repeats": args.repeats},
        "target_step_over_floor": TARGET,
        "runs": runs,
        "command": "python benchmarks/brecq_speed.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = _markdown(result, settings)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    if echo:
        print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
