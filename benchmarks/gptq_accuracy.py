"""GPTQ vs round-to-nearest on the shipped CNNs: test accuracy at the same plans, paired.

    python benchmarks/gptq_accuracy.py          # -> results/gptq_accuracy.{json,md}

Family of primary comparisons, fixed before running: for each of ResNet-20 and MobileNetV2
(MNIST-5k, BatchNorm folded as for BRECQ) and each uniform plan W3 and W2 (first and last layer at
8 bits, per-channel grids), round-to-nearest vs GPTQ (act-order, block 128, 1% damping) on the same
1,000 test images: exact McNemar test and Newcombe 95% interval of the paired difference; the four
p-values Holm-adjusted. Calibration: ``--n-calib`` training images (default 1,024, the BRECQ
recipe's), never test images. A quick check beside the series' own tables (which the
``reproduce`` tooling builds), not a replacement for them.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _provenance import commit  # noqa: E402

from mixquant_lite.evaluation import correct_mask  # noqa: E402
from mixquant_lite.gptq import GPTQConfig, gptq  # noqa: E402
from mixquant_lite.layers import quantizable_layer_names, weight_of  # noqa: E402
from mixquant_lite.quant import fake_quantize  # noqa: E402
from mixquant_lite.recon.folding import fold_bn  # noqa: E402
from mixquant_lite.stats import paired_compare  # noqa: E402
from mixquant_lite.zoo.data import calibration_batch, mnist5k_loader  # noqa: E402
from mixquant_lite.zoo.models import load_pretrained  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def holm(p: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone), same order as ``p``."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-calib", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours = commit()
    loader = mnist5k_loader("test")
    calib = list(torch.split(calibration_batch(args.n_calib), 128))
    rows = []
    for ckpt in ("resnet20-mnist5k", "mobilenetv2-mnist5k"):
        model = fold_bn(load_pretrained(ckpt).eval())
        names = quantizable_layer_names(model)
        fp = correct_mask(model, loader)
        for b in (3, 2):
            plan = dict.fromkeys(names, b)
            plan[names[0]] = plan[names[-1]] = 8
            rtn = copy.deepcopy(model)
            with torch.no_grad():
                for n, bits in plan.items():
                    w = weight_of(rtn, n)
                    w.copy_(fake_quantize(w, bits, per_channel=True))
            q, rep = gptq(model, calib, plan, GPTQConfig(act_order=True))
            c = paired_compare(correct_mask(q, loader), correct_mask(rtn, loader),
                               labels=("GPTQ", "RTN"))
            rows.append({"model": ckpt, "plan": f"W{b} (first/last 8), per channel",
                         "avg_bits": rep.avg_bits, "fp32": 100.0 * float(fp.float().mean()),
                         **c.to_dict(), "gptq_seconds": rep.seconds})
            print(rows[-1], flush=True)
    for r, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_holm"] = p
    RESULTS.mkdir(exist_ok=True)
    meta = {"commit": ours, "n_calib": args.n_calib, "torch": torch.__version__}
    (RESULTS / "gptq_accuracy.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                           indent=1, default=str))
    lines = [
        "# GPTQ vs round-to-nearest on the MNIST-5k CNNs (paired, same plans)",
        "",
        f"{args.n_calib} calibration images (train split), 1,000 test images; BatchNorm folded; "
        f"commit {ours}; produced by `benchmarks/gptq_accuracy.py`. Diff = GPTQ - RTN in points "
        "with the Newcombe 95% interval; exact McNemar p, Holm-adjusted over the 4 comparisons. "
        "avg bits = true bits per weight with the float32 step + b-bit zero point per row.",
        "",
        "| model | plan | avg bits | FP32 % | RTN % | GPTQ % | diff [95% CI] | GPTQ-only / "
        "RTN-only | p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['plan']} | {r['avg_bits']:.3f} | {r['fp32']:.1f} | "
            f"{r['acc_b']:.1f} | {r['acc_a']:.1f} | {r['diff']:+.1f} [{r['ci_low']:+.1f}, "
            f"{r['ci_high']:+.1f}] | {r['only_a']} / {r['only_b']} | {r['p_holm']:.2g} |"
        )
    (RESULTS / "gptq_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
