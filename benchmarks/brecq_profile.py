"""Where a BRECQ step's time goes, per unit: ``python benchmarks/brecq_profile.py``.

For each shipped CNN and setting (default W3A8 and W4A4), runs :func:`mixquant_lite.brecq` with
``--iters`` steps per unit under :mod:`torch.profiler` (CPU), profiling only the optimisation
loop of each unit (``block_recon._optimise``, wrapped here; capture, range search and the
final MSE are outside it), and groups the self CPU time of the ATen ops into:

- ``conv``: convolution / linear forward and backward (what the floor is made of);
- ``act fake-quant``: the fused learnable fake-quant kernels (forward and backward);
- ``elementwise``: every other tensor op (the weight quantizer, the regulariser, the loss,
  unfused fake-quant arithmetic, Adam's updates);
- ``python + dispatch``: the loop's wall time minus the ops' self time (interpreter, autograd
  engine bookkeeping, profiler overhead; an upper bound).

Also prints the ten most expensive ops per model and setting, and times forward + backward of
the learned-step activation fake-quant spelled three ways (:func:`fake_quant_micro`). Results
(with the thread count
and commit) go to ``benchmarks/results/brecq_profile.json``; the findings are written up by hand
in ``brecq_profile.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _provenance import commit  # noqa: E402
from brecq_speed import _model_and_data, _parse_setting  # noqa: E402

from mixquant_lite.recon import block_recon, brecq  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONV = ("mkldnn_convolution", "convolution_backward", "thnn_conv", "addmm", "mm", "_conv_depthwise",
        "slow_conv", "linear", "bmm")


def _bucket(op: str) -> str:
    name = op.split("::")[-1]
    if "fake_quantize" in name:
        return "act fake-quant"
    if any(name == c or name.startswith(c) for c in CONV):
        return "conv"
    return "elementwise"


def profile_run(model_name: str, setting: str, iters: int, n_calib: int) -> dict:
    """Profile the loop of every unit of one brecq run; per unit: step ms and its buckets."""
    model, x, _ = _model_and_data(model_name, n_calib, "cpu")
    wbits, act = _parse_setting(setting)
    original = block_recon._optimise
    per_unit: dict[str, dict] = {}
    top: dict[str, float] = defaultdict(float)

    def wrapped(unit_module, quantizers, acts, inputs, targets, config, n, gen, desc):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            original(unit_module, quantizers, acts, inputs, targets, config, n, gen, desc)
            wall = time.perf_counter() - t0
        buckets: dict[str, float] = defaultdict(float)
        for ev in prof.key_averages():
            if not ev.key.startswith("aten::"):
                continue
            buckets[_bucket(ev.key)] += ev.self_cpu_time_total / 1e3  # ms
            top[ev.key] += ev.self_cpu_time_total / 1e3 / n
        ops = sum(buckets.values())
        row = {k: round(v / n, 3) for k, v in buckets.items()}
        row["python + dispatch"] = round(max(wall * 1e3 - ops, 0.0) / n, 3)
        row["step_ms_profiled"] = round(wall * 1e3 / n, 3)
        per_unit[desc.removeprefix("BRECQ ")] = row

    block_recon._optimise = wrapped
    try:
        brecq(model, x, wbits, act_bits=act, iters=iters, n_calib=n_calib, progress=False)
    finally:
        block_recon._optimise = original
    top10 = sorted(top.items(), key=lambda kv: -kv[1])[:10]
    return {"model": model_name, "setting": setting, "units": per_unit,
            "top_ops_ms_per_step_all_units": [(k, round(v, 3)) for k, v in top10]}


def fake_quant_micro(repeats: int = 30) -> dict[str, float]:
    """CPU ms (one thread) of forward + backward of three spellings of the learned-step
    activation fake-quant on a ``(32, 16, 28, 28)`` post-ReLU tensor (ResNet-20's first
    blocks), and of a 3x3 16->16 convolution on it, for scale."""
    from mixquant_lite.recon.act_quant import LearnedStepFakeQuant

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(32, 16, 28, 28, generator=gen).relu() * 2).requires_grad_(True)
    g = torch.randn(x.shape, generator=gen)
    w = torch.randn(16, 16, 3, 3, generator=gen, requires_grad=True)
    delta = torch.tensor(0.1, requires_grad=True)
    z = torch.tensor(0.0)

    def ste():  # before: straight-through round in plain ops
        s = delta.abs()
        t = x * (1.0 / s)
        t = t + (torch.round(t) - t).detach()
        return (torch.clamp(t + z, 0, 15) - z) * s

    def fused():  # PyTorch's fused learnable kernel
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, delta.abs().reshape(1), z.reshape(1), 0, 15, 1.0)

    def ours():
        return LearnedStepFakeQuant.apply(x, delta.abs(), z, 15)

    def conv():
        return torch.nn.functional.conv2d(x, w, padding=1)

    out = {}
    for name, f in (("straight-through round (before)", ste), ("torch fused learnable", fused),
                    ("LearnedStepFakeQuant (after)", ours), ("conv 3x3 16->16", conv)):
        wrt = [x, w] if name.startswith("conv") else [x, delta]
        for _ in range(3):
            torch.autograd.grad(f(), wrt, g)
        c0 = time.process_time()
        for _ in range(repeats):
            torch.autograd.grad(f(), wrt, g)
        out[name] = round((time.process_time() - c0) / repeats * 1e3, 3)
    torch.set_num_threads(threads)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="resnet20,mobilenetv2")
    ap.add_argument("--settings", default="W3A8,W4A4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--out", default="brecq_profile")
    args = ap.parse_args(argv)
    micro = fake_quant_micro()
    print(json.dumps(micro), flush=True)
    runs = []
    for t in (int(v) for v in args.threads.split(",")):
        torch.set_num_threads(t)
        for m in args.models.split(","):
            for s in args.settings.split(","):
                r = profile_run(m, s, args.iters, args.n_calib)
                r["threads"] = t
                runs.append(r)
                print(json.dumps(r), flush=True)
    out = {"benchmark": "brecq_profile", "commit": commit(), "torch": torch.__version__,
           "iters": args.iters, "n_calib": args.n_calib,
           "fake_quant_fwd_bwd_cpu_ms": micro, "runs": runs,
           "command": "python benchmarks/brecq_profile.py " + " ".join(argv or sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
