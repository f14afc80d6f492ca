"""The two readings of the MixQuant rule on the shipped model, measured (docs/reading.md).

For a grid of QEMs: the plan of our reading (``mixquant``: each layer's own 8-bit QE as its
baseline) and of the alternative reading (``mixquant_model_baseline``: one model-wide baseline),
with average bit-width, bit-width histogram and top-1 accuracy (round-to-nearest, per tensor) on
the MNIST-5k test split; then every distinct mixed plan of the alternative reading against our
reading's plan at the same size (``qem_for_budget``), with the exact McNemar test.

Usage: ``python tools/reading_compare.py [--write docs/reading.md]``. With ``--write`` the
tables replace the block between the ``<!-- BEGIN GENERATED -->`` / ``<!-- END GENERATED -->``
markers of that file; otherwise they are printed.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import torch

from mixquant_lite.evaluation import correct_mask
from mixquant_lite.search import mixquant, qem_for_budget
from mixquant_lite.table import qe_table
from mixquant_lite.tutorial.readings import mixquant_model_baseline, model_baseline_qe
from mixquant_lite.tutorial.stats import paired_compare
from mixquant_lite.zoo.data import mnist5k_loader
from mixquant_lite.zoo.models import load_pretrained

QEMS = (1, 2, 3, 4, 8, 16, 32, 64, 256, 1024, 4096)
BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"


def hist(plan) -> str:
    c = Counter(plan.bits.values())
    return " ".join(f"{b}x{c[b]}" for b in sorted(c, reverse=True))


def tables() -> str:
    model = load_pretrained("resnet20-mnist5k")
    loader = mnist5k_loader("test", batch_size=500)
    table = qe_table(model)
    cache: dict[tuple, torch.Tensor] = {}

    def mask(plan) -> torch.Tensor:
        key = tuple(plan.bits.items())
        if key not in cache:
            cache[key] = correct_mask(plan.apply(model), loader)
        return cache[key]

    def acc(plan) -> float:
        return 100.0 * mask(plan).double().mean().item()

    lines = [
        f"Model `resnet20-mnist5k`, QE table per tensor, {len(table.layers)} layers, "
        f"{table.total_numel:,} weights; model-wide baseline (weight-weighted mean 8-bit QE) "
        f"= {model_baseline_qe(table):.3e}. Top-1 on the MNIST-5k test split (1,000 images), "
        "round-to-nearest per the plan; FP32: "
        f"{100.0 * correct_mask(model, loader).double().mean().item():.1f}%.",
        "",
        "| QEM | our reading: avg bits | plan | top-1 % | alternative: avg bits | plan | top-1 % |",
        "|---:|---:|---|---:|---:|---|---:|",
    ]
    alt_plans = []
    for q in QEMS:
        ours, alt = mixquant(table, q), mixquant_model_baseline(table, q)
        alt_plans.append((q, alt))
        lines.append(f"| {q:g} | {ours.avg_bits:.3f} | {hist(ours)} | {acc(ours):.1f} | "
                     f"{alt.avg_bits:.3f} | {hist(alt)} | {acc(alt):.1f} |")
    lines += [
        "",
        "Each distinct mixed plan of the alternative reading against our reading's plan of the "
        "same size (the smallest QEM whose plan fits, `qem_for_budget`); exact McNemar test on "
        "the 1,000 paired images, Newcombe 95% interval of the difference:",
        "",
        "| alt. QEM | alt. avg bits | our QEM | our avg bits | alt. top-1 % | our top-1 % | "
        "diff (points) [95% CI] | McNemar p | verdict |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    seen = set()
    for q, alt in alt_plans:
        key = tuple(alt.bits.items())
        if key in seen or len(set(alt.bits.values())) < 2:
            continue
        seen.add(key)
        q_ours = qem_for_budget(table, avg_bits=alt.avg_bits)
        ours = mixquant(table, q_ours)
        r = paired_compare(mask(alt), mask(ours), labels=("alternative", "ours"))
        lines.append(f"| {q:g} | {alt.avg_bits:.3f} | {q_ours:.4g} | {ours.avg_bits:.3f} | "
                     f"{r.acc_a:.1f} | {r.acc_b:.1f} | {r.diff:+.1f} [{r.ci_low:+.1f}, "
                     f"{r.ci_high:+.1f}] | {r.p_value:.3g} | {r.verdict} |")
    lines += ["", "Written by `python tools/reading_compare.py --write docs/reading.md`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, help="markdown file whose generated block to replace")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # a script, not the library: one thread keeps shared CPUs usable
    text = tables()
    if args.write is None:
        print(text)
        return 0
    doc = args.write.read_text()
    pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pat.search(doc):
        print(f"{args.write}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    args.write.write_text(pat.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))
    print(f"wrote the generated block of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
