"""Does ``estimate_brecq_time`` predict a real BRECQ run? Estimate, then run, same process.

    python benchmarks/estimate_check.py                    # ResNet-20, CPU, 200 steps per unit
    python benchmarks/estimate_check.py --iters 1000 --device cuda

Estimates one BRECQ run (W3, float activations, ``--iters`` steps per unit, ``--n-calib``
images) from a ``--warmup-steps`` warm-up, then times the run itself and writes
``benchmarks/results/estimate_check[-<device>].{json,md}`` with actual / estimate.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixquant_lite.recon import brecq  # noqa: E402
from mixquant_lite.reproduce.timing import estimate_brecq_time  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mixquant_lite.zoo.models import data_dir, load_pretrained, resnet20

    if (data_dir() / "resnet20-mnist5k.pt").is_file():
        model, source = load_pretrained("resnet20-mnist5k"), "trained checkpoint"
    else:
        model, source = resnet20().eval(), "random weights"
    model = model.to(args.device)
    x = torch.randn(args.n_calib, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = x.to(args.device)
    load0 = os.getloadavg()[0]
    est = estimate_brecq_time(model, x, n_runs=1, iters=args.iters, n_calib=args.n_calib,
                              warmup_steps=args.warmup_steps)
    t0 = time.perf_counter()
    brecq(model, x, 3, iters=args.iters, n_calib=args.n_calib, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    actual = time.perf_counter() - t0
    res = {
        "model": "resnet20", "weights": source, "device": est.device,
        "device_name": est.device_name, "threads": torch.get_num_threads(),
        "iters": args.iters, "n_calib": args.n_calib, "warmup_steps": args.warmup_steps,
        "warmup_s": est.warmup_s, "estimate_s": est.total_s, "actual_s": actual,
        "actual_over_estimate": actual / est.total_s,
        "load_1min_before": load0, "load_1min_after": os.getloadavg()[0],
        "estimate": str(est),
    }
    suffix = "" if args.device == "cpu" else "-" + args.device.split(":")[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"estimate_check{suffix}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = (
        f"# estimate_brecq_time vs a real run: ResNet-20 ({source}) on {res['device_name']} "
        f"({res['device']}, {res['threads']} thread(s))\n\n"
        f"`python benchmarks/estimate_check.py {' '.join(argv or sys.argv[1:])}`: one BRECQ run, "
        f"W3, float activations, {args.iters} steps per unit, {args.n_calib} calibration "
        f"images; 1-min load average {load0:.1f} -> {res['load_1min_after']:.1f}.\n\n"
        "| warm-up s | estimate s | actual s | actual / estimate |\n|---:|---:|---:|---:|\n"
        f"| {est.warmup_s:.1f} | {est.total_s:.1f} | {actual:.1f} | "
        f"{res['actual_over_estimate']:.2f} |\n\n{est}\n"
    )
    (RESULTS / f"estimate_check{suffix}.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
