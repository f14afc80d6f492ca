"""CUDA check: the package's code paths on a GPU (run by hand on a GPU machine; not in CI).

    python benchmarks/gpu_check.py [OUT_DIR]

Checks, on CUDA tensors: the QE table equals the CPU one (ResNet-152, random init, per tensor
and per channel) and its speed against the benchmark's naive reference; a MixQuant plan applied
to the shipped ResNet-20 scores the same top-1 on CUDA as on CPU; a quick BRECQ run follows the
model onto the GPU. Writes ``gpu_check.json`` (default ``benchmarks/results/``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_speed import naive_table  # noqa: E402

from mixquant_lite.evaluation import evaluate  # noqa: E402
from mixquant_lite.recon import brecq  # noqa: E402
from mixquant_lite.search import mixquant  # noqa: E402
from mixquant_lite.table import qe_table  # noqa: E402
from mixquant_lite.zoo.data import calibration_batch, mnist5k_loader  # noqa: E402
from mixquant_lite.zoo.models import load_pretrained, torchvision_resnet  # noqa: E402


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    torch.manual_seed(0)
    m = torchvision_resnet("resnet152", pretrained=False)
    for per_channel in (False, True):
        cpu = qe_table(m, per_channel=per_channel).values
        gpu = qe_table(m.cuda(), per_channel=per_channel).values
        m.cpu()
        res[f"resnet152_max_rel_diff_cpu_vs_cuda_per_channel={per_channel}"] = float(
            np.max(np.abs(gpu - cpu) / np.maximum(cpu, 1e-30))
        )
    m.cuda()
    t_pkg, _ = _timed(lambda: qe_table(m))
    t_naive, _ = _timed(lambda: naive_table(m))
    t_read, _ = _timed(
        lambda: [torch.sum(p * p).item() for n, p in m.named_parameters() if n.endswith("weight")]
    )
    res.update(resnet152_cuda_qe_table_s=t_pkg, resnet152_cuda_naive_s=t_naive,
               cuda_naive_over_package=t_naive / t_pkg, cuda_package_over_read=t_pkg / t_read)

    r20 = load_pretrained("resnet20-mnist5k")
    plan = mixquant(qe_table(r20), 300)
    q_cpu = plan.apply(r20)
    q_gpu = plan.apply(r20.cuda())
    loader = mnist5k_loader("test")
    res["r20_qem300_avg_bits"] = plan.avg_bits
    res["r20_qem300_top1_cpu"] = evaluate(q_cpu, loader)
    res["r20_qem300_top1_cuda"] = evaluate(q_gpu, loader)

    t0 = time.perf_counter()
    qb, rep = brecq(r20.cuda(), calibration_batch(256), 3, iters=300, n_calib=256, progress=False)
    res["brecq_cuda_w3_iters300_seconds"] = time.perf_counter() - t0
    res["brecq_cuda_param_device"] = str(next(qb.parameters()).device)
    res["brecq_cuda_w3_top1"] = evaluate(qb, loader)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
