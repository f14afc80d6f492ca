"""Where quick mode stands: BRECQ accuracy and reconstruction loss against steps per unit.

One setting of the results table -- ResNet-20 on MNIST-5k, uniform W3 with first and last layer
at 8 bits, float activations, the recipe's 1,024 calibration images and batch 32 -- run at
several numbers of optimisation steps per unit (0 = round-to-nearest on the MSE grid). Each
finished point is written at once to ``<out>.json`` (resumable: a re-run skips finished points);
``<out>.md`` is the table. Every point is scored on the same 1,000 test images; the per-image
correctness vector is stored so that points can be compared with a paired test.

    python benchmarks/brecq_steps.py                       # 0 200 1000 5000 20000 steps
    python benchmarks/brecq_steps.py --steps 0 200 1000    # a subset
    python benchmarks/brecq_steps.py --render-only         # re-write the md from the JSON

The md also compares every point with the 200-step point (quick mode's setting), image by
image: exact McNemar test and Newcombe 95% interval (:func:`mixquant_lite.stats.paired_compare`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from _provenance import commit  # benchmarks/ is on sys.path when run as a script

from mixquant_lite.plan import BitPlan
from mixquant_lite.recon import brecq, fold_bn
from mixquant_lite.stats import paired_compare
from mixquant_lite.table import qe_table
from mixquant_lite.zoo.data import calibration_batch, mnist5k_loader
from mixquant_lite.zoo.models import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
REF_STEPS = 200  # quick mode's setting: the point every other one is compared with



@torch.no_grad()
def _correct(model: torch.nn.Module, loader) -> list[int]:
    model.eval()
    out: list[int] = []
    for x, y in loader:
        out += (model(x).argmax(1) == y).int().tolist()
    return out


def _render(data: dict, out: Path, bits: int, n_calib: int) -> None:
    """Write ``<out>.md`` from the stored points (table, then the paired tests)."""
    rows = sorted(data["points"].values(), key=lambda p: p["steps"])
    lines = [
        f"# BRECQ W{bits} (first/last 8), A32, ResNet-20 on MNIST-5k: "
        "accuracy vs steps per unit",
        "",
        f"{n_calib} calibration images, batch 32, seed 0; the loss is the sum over units of "
        "the mean squared error per output element on the calibration set after rounding "
        "(before = round-to-nearest on the same grid).",
        "",
        "| steps per unit | top-1 % | loss after (sum over units) | loss before | wall s "
        "| commit |",
        "|---|---|---|---|---|---|",
    ]
    for p in rows:
        lines.append(f"| {p['steps']} | {p['top1']:.1f} | {p['loss_after_sum']:.4g} | "
                     f"{p['loss_before_sum']:.4g} | {p['wall_s']:.0f} | {p['commit']} |")
    ref = data["points"].get(str(REF_STEPS))
    lines += ["", f"## Each point against {REF_STEPS} steps (quick mode), image by image", ""]
    if ref is None:
        lines.append(f"No {REF_STEPS}-step point stored: nothing to compare with.")
    else:
        lines += [
            f"Same {len(ref['correct'])} test images: difference in top-1 (points) with its 95% "
            "confidence interval (Newcombe's score interval for paired proportions), the "
            f"discordant images (only this point right / only {REF_STEPS} steps right), the "
            "exact McNemar p-value and the verdict (a difference is named only when p < 0.05).",
            "",
            f"| steps per unit | top-1 % | {REF_STEPS} steps top-1 % | difference | 95% CI "
            "| only this / only ref | McNemar p | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        borderline = []
        for p in rows:
            if p["steps"] == REF_STEPS:
                continue
            c = paired_compare(p["correct"], ref["correct"],
                               labels=(f"{p['steps']} steps", f"{REF_STEPS} steps"))
            lines.append(f"| {p['steps']} | {c.acc_a:.1f} | {c.acc_b:.1f} | {c.diff:+.2f} | "
                         f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}] | {c.only_a} / {c.only_b} | "
                         f"{c.p_value:.3g} | {c.verdict} |")
            if c.is_tie and (c.ci_low > 0 or c.ci_high < 0):
                borderline.append(str(p["steps"]))
        if borderline:
            lines += ["", f"At {', '.join(borderline)} steps the (approximate) interval just "
                      "excludes 0 while the exact test does not reject at 0.05: a borderline "
                      "difference, reported as a tie."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 200, 1000, 5000, 20000])
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--n-calib", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "brecq-steps-resnet20-mnist5k"))
    ap.add_argument("--render-only", action="store_true",
                    help="re-write <out>.md from the stored <out>.json; runs no BRECQ")
    args = ap.parse_args(argv)
    if any(s < 0 for s in args.steps):
        ap.error("--steps must be >= 0")
    out = Path(args.out)
    store = out.with_suffix(".json")
    if args.render_only:
        if not store.is_file():
            ap.error(f"--render-only needs {store}")
        _render(json.loads(store.read_text()), out, args.bits, args.n_calib)
        return 0
    torch.set_num_threads(args.threads)  # a script: the process is ours

    model = load_pretrained("resnet20-mnist5k")
    folded = fold_bn(model)
    table = qe_table(folded)
    first, last = table.layers[0], table.layers[-1]
    plan = BitPlan({k: 8 if k in (first, last) else args.bits for k in table.layers},
                   dict(table.numel), False, {"method": "uniform", "bits": args.bits})
    calib = calibration_batch(args.n_calib, 0)
    loader = mnist5k_loader("test", batch_size=500)

    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(store.read_text()) if store.exists() else {"points": {}}
    for steps in args.steps:
        if str(steps) in data["points"]:
            print(f"{steps} steps: done earlier", flush=True)
            continue
        t = time.perf_counter()
        qmodel, report = brecq(model, calib, plan, iters=steps, n_calib=args.n_calib,
                               batch_size=32, seed=0, progress=False)
        wall = time.perf_counter() - t
        correct = _correct(qmodel, loader)
        frame = report.to_frame()
        data["points"][str(steps)] = dict(
            steps=steps, top1=100.0 * sum(correct) / len(correct), wall_s=wall,
            loss_before_sum=float(frame["loss_before"].sum()),
            loss_after_sum=float(frame["loss_after"].sum()),
            rounding=frame["rounding"].tolist(), correct=correct,
            commit=commit(), torch=torch.__version__, threads=torch.get_num_threads(),
            machine=f"{platform.machine()} {os.cpu_count()} cores",
            date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, store)
        p = data["points"][str(steps)]
        print(f"{steps} steps: top-1 {p['top1']:.1f} %, loss {p['loss_after_sum']:.4g}, "
              f"{wall:.0f} s", flush=True)

    _render(data, out, args.bits, args.n_calib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
