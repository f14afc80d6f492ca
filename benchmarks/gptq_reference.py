"""GPTQ side by side with the authors' reference implementation on the same layers and data.

    git clone https://github.com/IST-DASLab/gptq /tmp/gptq_ref     # not part of this repository
    python benchmarks/gptq_reference.py --ref /tmp/gptq_ref        # -> results/gptq_reference.*

The reference (Frantar et al., ``gptq.py`` + ``quant.py`` of IST-DASLab/gptq) is imported from the
folder given by ``--ref``; none of its code is copied here. Its ``torch.cuda.synchronize()`` call is
replaced by a no-op so that it runs on CPU, and its prints are silenced; nothing else is changed.

Layers (both see the same weights and the same calibration inputs; each builds its own Hessian):

- ``linear-384x1536``: a ``Linear(1536, 384)`` with structured random weights (low rank plus
  noise, per-row scales spread log-normally, a few outlier weights) and 4,096 correlated input
  vectors (decaying spectrum, 8 outlier input channels 10x larger); a further 4,096 held out.
- ``mobilenetv2.features.8.conv.2``: the trained MobileNetV2-MNIST 1x1 projection convolution
  ``(96, 384, 1, 1)``; its inputs captured from the float model on 256 calibration images
  (12,544 vectors) and 256 held-out test images.

Settings: 4 and 3 bits x per channel / 128-weight groups x act-order off / on (asymmetric
min-max grids, block 128, 1% damping; with act-order and groups the reference's
``static_groups=True``, which is what this package does). Reported per setting: the layer-output
error ``||W X - Q X||^2 / N`` of each implementation on the calibration vectors and on the
held-out ones, their relative difference, round-to-nearest's for scale, and the fraction of
weights whose integer code is the same. The tolerance (decided before running): relative
difference of the calibration output error within 1%.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _provenance import commit  # noqa: E402

from mixquant_lite.gptq import GPTQConfig, gptq_layer  # noqa: E402
from mixquant_lite.gptq_core import HessianAccumulator  # noqa: E402
from mixquant_lite.quant import fake_quantize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.01


def structured_linear(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A 384x1536 Linear with structured weights and correlated inputs (calibration, held out)."""
    g = torch.Generator().manual_seed(seed)
    out_f, in_f, rank = 384, 1536, 32
    w = torch.randn(out_f, rank, generator=g) @ torch.randn(rank, in_f, generator=g) / rank**0.5
    w = w + 0.5 * torch.randn(out_f, in_f, generator=g)
    w = w * torch.exp(0.5 * torch.randn(out_f, 1, generator=g)) * 0.02
    idx = torch.randint(0, w.numel(), (64,), generator=g)
    w.view(-1)[idx] *= 8.0  # outlier weights
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        layer.weight.copy_(w)
    spectrum = torch.logspace(0, -2, in_f)
    basis, _ = torch.linalg.qr(torch.randn(in_f, in_f, generator=g))
    mix = (basis * spectrum) @ basis.T
    x = torch.randn(8192, in_f, generator=g) @ mix * 10
    x[:, torch.randperm(in_f, generator=g)[:8]] *= 10.0  # outlier channels
    return layer, x[:4096], x[4096:]


def mobilenet_layer() -> tuple[nn.Conv2d, torch.Tensor, torch.Tensor]:
    """The trained MobileNetV2's ``features.8.conv.2`` and its float inputs (calib, test)."""
    from mixquant_lite.zoo.data import calibration_batch, mnist5k
    from mixquant_lite.zoo.models import load_pretrained

    model = load_pretrained("mobilenetv2-mnist5k").eval()
    layer = model.get_submodule("features.8.conv.2")
    seen: list[torch.Tensor] = []
    h = layer.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach().clone()))
    test = torch.stack([mnist5k("test")[i][0] for i in range(256)])
    with torch.no_grad():
        model(calibration_batch(256))
        model(test)
    h.remove()
    return layer, seen[0], seen[1]


def as_vectors(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input vectors ``(N, K)`` the layer's weight matrix multiplies (1x1 conv: per pixel)."""
    if isinstance(layer, nn.Conv2d):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[-1])


def out_err(w: torch.Tensor, q: torch.Tensor, v: torch.Tensor) -> float:
    d = (w.reshape(w.shape[0], -1) - q.reshape(q.shape[0], -1)).double()
    return float(((v.double() @ d.T) ** 2).sum() / len(v))


def run_reference(ref_mod, quant_mod, layer, x, bits, group, act_order):
    """The authors' GPTQ on a copy of ``layer``: (quantized weight, seconds)."""
    import copy

    lay = copy.deepcopy(layer)
    g = ref_mod.GPTQ(lay)
    g.quantizer = quant_mod.Quantizer()
    g.quantizer.configure(bits, perchannel=True, sym=False, mse=False)
    for chunk in torch.split(x, 64):
        g.add_batch(chunk, None)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        g.fasterquant(blocksize=128, percdamp=0.01, groupsize=group or -1, actorder=act_order,
                      static_groups=bool(group and act_order))
    return lay.weight.detach().clone(), time.perf_counter() - t


def run_ours(layer, x, bits, group, act_order):
    cfg = GPTQConfig(act_order=act_order, granularity="per_group" if group else "per_channel",
                     group_size=group)
    acc = HessianAccumulator(layer)
    for chunk in torch.split(x, 64):
        acc.add(chunk)
    t = time.perf_counter()
    qw = gptq_layer(layer, acc.hessian(), bits, cfg)
    return qw, time.perf_counter() - t


def step_of(qw, shape) -> torch.Tensor:
    """Per-element step of our grid, shape ``(C, K)``."""
    c, k = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    s = qw.scale.float()
    return (s[:, None].expand(c, k) if s.dim() == 1
            else s.repeat_interleave(k // s.shape[1], dim=1))


def compare(ref_mod, quant_mod, name, layer, xc, xt) -> list[dict]:
    rows = []
    vc, vt = as_vectors(layer, xc), as_vectors(layer, xt)
    w = layer.weight.detach()
    for bits in (4, 3):
        for group in (None, 128):
            for act_order in (False, True):
                q_ref, t_ref = run_reference(ref_mod, quant_mod, layer, xc, bits, group,
                                             act_order)
                qw, t_ours = run_ours(layer, xc, bits, group, act_order)
                q_ours = qw.dequantize().reshape(w.shape)
                rtn = fake_quantize(w, bits, per_channel=True, group_size=group)
                step = step_of(qw, w.shape)
                same = ((q_ours - q_ref).reshape(step.shape).abs() < 0.5 * step).float().mean()
                e_ref, e_ours = out_err(w, q_ref, vc), out_err(w, q_ours, vc)
                rows.append({
                    "layer": name, "bits": bits, "grid": f"g{group}" if group else "per-channel",
                    "act_order": act_order, "err_ref": e_ref, "err_ours": e_ours,
                    "rel_diff": (e_ours - e_ref) / e_ref, "err_rtn": out_err(w, rtn, vc),
                    "test_err_ref": out_err(w, q_ref, vt), "test_err_ours": out_err(w, q_ours, vt),
                    "codes_equal": float(same), "s_ref": t_ref, "s_ours": t_ours,
                })
                print(rows[-1], flush=True)
    return rows


def render(rows: list[dict], meta: dict) -> str:
    ok = all(abs(r["rel_diff"]) <= TOLERANCE for r in rows)
    lines = [
        "# GPTQ vs the authors' reference implementation (same layers, same calibration data)",
        "",
        f"Reference: IST-DASLab/gptq `gptq.py` + `quant.py` at commit {meta['ref_commit']} "
        f"(imported from a local clone, run on CPU). This package: commit {meta['commit']}. "
        f"torch {meta['torch']}, {meta['threads']} thread(s), load average "
        f"{meta['load_avg_start']:.2f} at the start (seconds are noisy on a shared machine; "
        "both implementations ran interleaved in one process). Produced by "
        "`benchmarks/gptq_reference.py`.",
        "",
        "Error = layer-output error ||W X - Q X||^2 / N (mean over the N input vectors, output "
        "units squared), on the calibration vectors (`calib`) and held-out vectors (`test`); "
        "rel. diff = (ours - reference) / reference on calib; codes equal = fraction of weights "
        "with the same integer code. Tolerance stated before running: |rel. diff| <= "
        f"{TOLERANCE:.0%}. **Result: {'all within' if ok else 'NOT all within'} tolerance.**",
        "",
        "| layer | bits | grid | act-order | calib ref | calib ours | rel. diff | RTN | "
        "test ref | test ours | codes equal | s ref | s ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['bits']} | {r['grid']} | {'on' if r['act_order'] else 'off'} "
            f"| {r['err_ref']:.5g} | {r['err_ours']:.5g} | {r['rel_diff']:+.2e} | "
            f"{r['err_rtn']:.5g} | {r['test_err_ref']:.5g} | {r['test_err_ours']:.5g} | "
            f"{r['codes_equal']:.4%} | {r['s_ref']:.2f} | {r['s_ours']:.2f} |"
        )
    lines += [
        "",
        "Known differences of arithmetic (why codes can differ on a few weights): the reference "
        "accumulates H in float32 and inverts it in float32; this package sums H in float64 "
        "and factors it in float64 before the float32 column loop; the reference divides "
        "`x / s`, this package multiplies by the float32 `1/s` as PyTorch's fake-quant kernels "
        "do. A code flipped at a tie changes the error fed to the later columns, so differences "
        "can cascade within a row.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="folder holding the reference gptq.py, quant.py")
    ap.add_argument("--ref-commit", default=None, help="the reference's commit, for the record")
    ap.add_argument("--out", default="gptq_reference")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours = commit()  # at the start: the code this run imported
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.cuda.synchronize = lambda *a, **k: None  # the reference calls it unconditionally
    sys.path.insert(0, str(Path(args.ref).resolve()))
    import gptq as ref_mod  # noqa: PLC0415  (the reference's module, from --ref)
    import quant as quant_mod  # noqa: PLC0415

    ref_commit = args.ref_commit or "unknown"
    with contextlib.suppress(Exception):
        import subprocess

        ref_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.ref,
                                    capture_output=True, text=True).stdout.strip() or ref_commit
    # (a plain copy of the two files has no git: pass --ref-commit)
    rows = []
    torch.manual_seed(0)
    lin, xc, xt = structured_linear()
    rows += compare(ref_mod, quant_mod, "linear-384x1536", lin, xc, xt)
    conv, cc, ct = mobilenet_layer()
    rows += compare(ref_mod, quant_mod, "mobilenetv2.features.8.conv.2", conv, cc, ct)
    meta = {"commit": ours, "ref_commit": ref_commit, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_avg_start": load_avg}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / f"{args.out}.md").write_text(render(rows, meta))
    print(render(rows, meta))


if __name__ == "__main__":
    main()
