"""GPTQ cost: seconds, and the ratio to one FP32 forward pass over the same calibration set.

    python benchmarks/gptq_speed.py --model resnet20        # -> results/gptq_speed-resnet20.*
    python benchmarks/gptq_speed.py --model mobilenetv2
    python benchmarks/gptq_speed.py --model minilm-shape --n-calib 128 --batch 32
    python benchmarks/gptq_speed.py --model some.module:loader   # any testbed (e.g. MiniLM)

``--model`` is a registered name (``resnet20``, ``mobilenetv2``: the shipped MNIST-5k checkpoints
with ``--n-calib`` calibration images in batches of ``--batch``; ``minilm-shape``: a random BERT
of all-MiniLM-L6-v2's shape on random tokens, for the cost only) or ``module:function``, a
function returning ``(model, calib_batches, description)`` (``calib_batches``: what
:func:`mixquant_lite.gptq.gptq` accepts, e.g. a list of tokenizer dicts), so a transformer
testbed plugs in without changes here.

In one process it times (best of ``--repeats``): one FP32 forward pass of the model over all
calibration batches (``torch.no_grad``), and :func:`~mixquant_lite.gptq.gptq` at ``--bits``
per channel (block 128, 1% damping, act-order off, and on with ``--act-order``), and reports the
ratio, plus the split of GPTQ's time into input capture (the forward passes up to each layer) and
the solve (Hessian factorisation and column loop). Writes ``benchmarks/results/gptq_speed-<name>
.json`` and ``.md`` with the machine, threads and load average at the start.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _provenance import commit  # noqa: E402

from mixquant_lite.gptq import GPTQConfig, gptq  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _mnist(name: str, n: int, batch: int) -> tuple[torch.nn.Module, list, str]:
    from mixquant_lite.zoo.data import calibration_batch
    from mixquant_lite.zoo.models import load_pretrained

    ckpt = {"resnet20": "resnet20-mnist5k", "mobilenetv2": "mobilenetv2-mnist5k"}[name]
    x = calibration_batch(n)
    return (load_pretrained(ckpt).eval(), list(torch.split(x, batch)),
            f"{ckpt} (trained checkpoint), {n} calibration images in batches of {batch}")


def _minilm_shape(name: str, n: int, batch: int) -> tuple[torch.nn.Module, list, str]:
    """A randomly initialised ``transformers`` BERT with all-MiniLM-L6-v2's shape (6 layers,
    hidden 384, 12 heads, intermediate 1536): GPTQ's cost does not depend on the weights. ``n``
    random sequences of 128 tokens in batches of ``batch``."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                     num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(1000, 30000, (n, 128), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": b, "attention_mask": torch.ones_like(b)}
               for b in torch.split(ids, batch)]
    return model, batches, (f"BERT with MiniLM-L6's shape, random weights, {n} sequences of 128 "
                            f"tokens in batches of {batch}")


LOADERS = {"resnet20": _mnist, "mobilenetv2": _mnist, "minilm-shape": _minilm_shape}


def load(spec: str, n: int, batch: int) -> tuple[torch.nn.Module, list, str]:
    if spec in LOADERS:
        return LOADERS[spec](spec, n, batch)
    if ":" not in spec:
        raise SystemExit(f"--model must be one of {sorted(LOADERS)} or module:function")
    mod, fn = spec.split(":", 1)
    model, batches, desc = getattr(importlib.import_module(mod), fn)()
    return model.eval(), list(batches), desc


def forward_all(model: torch.nn.Module, batches: list[Any]) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(**b) if isinstance(b, Mapping) else model(b)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--n-calib", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours = commit()  # at the start: the code this run imported
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model, batches, desc = load(args.model, args.n_calib, args.batch)
    forward_all(model, batches)  # warm-up
    fwd = min(forward_all(model, batches) for _ in range(args.repeats))
    rows = []
    for act_order in (False, True):
        best = None
        for _ in range(args.repeats):
            _, rep = gptq(model, batches, args.bits, GPTQConfig(act_order=act_order))
            if best is None or rep.seconds < best.seconds:
                best = rep
        assert best is not None
        solve = sum(r.solve_seconds for r in best.layers)
        rows.append({"act_order": act_order, "gptq_s": best.seconds, "solve_s": solve,
                     "capture_s": best.seconds - solve, "ratio": best.seconds / fwd,
                     "layers": len(best.layers),
                     "error_vs_rtn": sum(r.error for r in best.layers)
                     / sum(r.rtn_error for r in best.layers)})
        print(rows[-1], flush=True)
    meta = {"model": args.model, "description": desc, "bits": args.bits,
            "threads": torch.get_num_threads(), "repeats": args.repeats, "forward_s": fwd,
            "load_avg_start": load_avg, "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "commit": ours}
    out = args.out or f"gptq_speed-{args.model.replace(':', '-').replace('.', '-')}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# GPTQ cost on {args.model}",
        "",
        f"{desc}. W{args.bits} per channel, block 128, 1% damping; best of {args.repeats}; "
        f"{meta['threads']} thread(s), load average {load_avg:.2f} at the start; torch "
        f"{meta['torch']}; commit {meta['commit']}. Produced by `benchmarks/gptq_speed.py`.",
        "",
        f"One FP32 forward pass over the calibration set: **{fwd:.3f} s**.",
        "",
        "| act-order | layers | GPTQ s | capture s | solve s | GPTQ / forward | sum err / RTN |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {'on' if r['act_order'] else 'off'} | {r['layers']} | {r['gptq_s']:.2f} "
                     f"| {r['capture_s']:.2f} | {r['solve_s']:.2f} | {r['ratio']:.1f}x | "
                     f"{r['error_vs_rtn']:.3f} |")
    lines += ["", "Capture = the forward passes that collect each layer's inputs (each stops at "
              "that layer; later layers see the already-quantized earlier ones); solve = "
              "Hessian factorisation + column loop, summed over layers. `sum err / RTN`: the "
              "layers' summed calibration output errors, GPTQ over round-to-nearest."]
    (RESULTS / f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
