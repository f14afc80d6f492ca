"""``mixquant-lite``: the command line.

    mixquant-lite search --model resnet20-mnist5k --qem 300 [--json plan.json]
    mixquant-lite search --model resnet20-mnist5k --budget-avg-bits 4.5
    mixquant-lite sweep  --model resnet20-mnist5k --qem 1 10 100 1000 10000

``--model`` takes a shipped checkpoint name (``resnet20-mnist5k``), a torchvision model name
(pretrained weights; ``--random-init`` to use random ones knowingly) or a path to a
``state_dict`` checkpoint (read with ``torch.load(weights_only=True)``; ``--arch`` names the
architecture when the file does not).

Subcommands live in :data:`COMMANDS` (name -> ``(add_arguments, run, help)``); a new one is one
more entry, e.g. ``COMMANDS["reproduce"] = (add_reproduce_args, run_reproduce, "...")``.
``run`` returns the exit status; raising :class:`CLIError` prints the message and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from .plan import fmt_bytes
from .validate import parse_bit_list, parse_layer_bits, parse_positive
from .zoo.loading import ModelSpecError, torchvision_names
from .zoo.loading import load_model as _load_model

if TYPE_CHECKING:
    from .reproduce import ReproduceConfig

__all__ = ["main", "build_parser", "COMMANDS", "CLIError", "load_model"]


class CLIError(Exception):
    """A user-facing error: printed as ``mixquant-lite: error: ...``, exit status 2."""


def load_model(
    spec: str, *, random_init: bool = False, arch: str | None = None
) -> tuple[nn.Module, str]:
    """:func:`mixquant_lite.zoo.loading.load_model`, its errors as :class:`CLIError`."""
    try:
        return _load_model(spec, random_init=random_init, arch=arch)
    except ModelSpecError as e:
        raise CLIError(str(e)) from None


# ----------------------------------------------------------------------------- arguments


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model/--random-init/--arch/--bits/--per-channel/--device``: shared by subcommands."""
    g = p.add_argument_group("model and QE table")
    g.add_argument("--model", default="resnet20-mnist5k",
                   help="shipped checkpoint name, torchvision model name, or a .pt state_dict "
                        "path (default: %(default)s)")
    g.add_argument("--random-init", action="store_true",
                   help="torchvision models only: use random weights instead of pretrained ones")
    g.add_argument("--arch", help="architecture of a bare state_dict checkpoint "
                                  "(resnet20 or a torchvision name)")
    g.add_argument("--bits", type=parse_bit_list, default=tuple(range(2, 9)),
                   help="candidate bit-widths, e.g. 2-8 or 2,4,8 (default: 2-8)")
    g.add_argument("--per-channel", action="store_true",
                   help="one quantization grid per output channel (default: per tensor)")
    g.add_argument("--device", default="cpu", help="torch device for the QE table (default: cpu)")
    g.add_argument("--baseline-bits", type=int, default=None,
                   help="MixQuant baseline bit-width (default: 8, or the largest candidate "
                        "when 8 is not one)")
    g.add_argument("--fix", type=parse_layer_bits, action="append", default=[],
                   metavar="LAYER=BITS", help="keep LAYER at BITS (repeatable)")
    g.add_argument("--first-last-bits", type=int, metavar="BITS",
                   help="keep the first and the last quantizable layer at BITS")


def _table_from_args(args: argparse.Namespace):
    from .layers import first_last_layers
    from .table import qe_table

    model, source = load_model(args.model, random_init=args.random_init, arch=args.arch)
    try:
        model = model.to(args.device)
    except (RuntimeError, AssertionError) as e:
        raise CLIError(f"cannot use --device {args.device}: {e}") from None
    try:
        table = qe_table(model, args.bits, per_channel=args.per_channel)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    fixed = dict(args.fix)
    if args.first_last_bits is not None:
        first, last = first_last_layers(model)  # module order, as everywhere
        fixed.setdefault(first, args.first_last_bits)
        fixed.setdefault(last, args.first_last_bits)
    if args.baseline_bits is None:
        args.baseline_bits = 8 if 8 in table.bits else max(table.bits)
    grid = "per-channel" if args.per_channel else "per-tensor"
    head = (f"{args.model}: {source}; {len(table.layers)} Conv2d/Linear layers, "
            f"{table.total_numel:,} weights; {grid} grids, candidates {list(table.bits)}")
    return table, fixed, head


def _layer_frame(table, plan) -> pd.DataFrame:
    df = table.to_frame()
    df.columns = [f"QE@{b}" for b in table.bits]
    df.insert(0, "weights", [table.numel[n] for n in table.layers])
    df["bits"] = [plan.bits[n] for n in table.layers]
    return df


def _qe_fmt(x: float) -> str:
    return f"{x:.3e}"


# ----------------------------------------------------------------------------- search


def _add_search_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    g = p.add_argument_group("what to search for (one of)").add_mutually_exclusive_group()
    g.add_argument("--qem", type=parse_positive, help="MixQuant QE multiplier (default: 100)")
    g.add_argument("--budget-avg-bits", type=parse_positive, metavar="BITS",
                   help="exact least-error plan with at most this average bit-width")
    g.add_argument("--budget-bytes", type=parse_positive, metavar="BYTES",
                   help="exact least-error plan with at most this many bytes of weights")
    p.add_argument("--json", type=Path, metavar="FILE", help="save the plan as JSON")


def _run_search(args: argparse.Namespace) -> int:
    from .search import mixquant, plan_for_budget, qem_for_budget

    table, fixed, head = _table_from_args(args)
    budget = {}
    if args.budget_avg_bits is not None:
        budget = {"avg_bits": args.budget_avg_bits}
    elif args.budget_bytes is not None:
        budget = {"size_bytes": args.budget_bytes}
    try:
        if budget:
            plan = plan_for_budget(table, fixed=fixed, **budget)
            what = "least total squared error within " + ", ".join(
                f"{k}={v:g}" for k, v in budget.items()) + " (exact MILP)"
        else:
            qem = 100.0 if args.qem is None else args.qem
            plan = mixquant(table, qem, baseline_bits=args.baseline_bits, fixed=fixed)
            what = f"MixQuant, QEM {qem:g}, baseline {args.baseline_bits} bits"
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    if fixed:
        what += "; fixed " + ", ".join(f"{k}={v}" for k, v in fixed.items())
    print(head)
    print(f"plan: {what}\n")
    df = _layer_frame(table, plan)
    print(df.to_string(formatters={c: _qe_fmt for c in df.columns if c.startswith("QE@")}))
    print()
    print(f"average bits {plan.avg_bits:.3f} | weights {fmt_bytes(plan.size_bytes)} vs "
          f"{fmt_bytes(plan.f32_bytes)} in f32 ({plan.compression:.2f}x smaller) | "
          f"total squared error {plan.squared_error(table):.4g}")
    if budget:
        try:
            q = qem_for_budget(table, baseline_bits=args.baseline_bits, fixed=fixed, **budget)
            mq = mixquant(table, q, baseline_bits=args.baseline_bits, fixed=fixed)
            print(f"(MixQuant within the same budget: QEM {q:.4g}, average bits "
                  f"{mq.avg_bits:.3f}, total squared error {mq.squared_error(table):.4g})")
        except ValueError as e:
            print(f"(MixQuant cannot meet this budget: {e})")
    if args.json is not None:
        plan.to_json(args.json)
        print(f"plan saved to {args.json}")
    return 0


# ----------------------------------------------------------------------------- sweep


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--qem", type=parse_positive, nargs="+", default=[1, 10, 100, 1000, 10000],
                   help="QE multipliers (default: 1 10 100 1000 10000)")


def _run_sweep(args: argparse.Namespace) -> int:
    from .search import sweep

    table, fixed, head = _table_from_args(args)
    try:
        df = sweep(table, args.qem, baseline_bits=args.baseline_bits, fixed=fixed)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    out = pd.DataFrame({
        "avg_bits": [f"{v:.3f}" for v in df["avg_bits"]],
        "weights": [fmt_bytes(v) for v in df["size_bytes"]],
        "vs_f32": [f"{v:.2f}x" for v in df["compression"]],
        "sq_error": [f"{v:.4g}" for v in df["sq_error"]],
        "bits_per_layer": [" ".join(str(b) for b in p.bits.values()) for p in df["plan"]],
    }, index=pd.Index([f"{q:g}" for q in df.index], name="qem"))
    print(head)
    print(f"MixQuant sweep, baseline {args.baseline_bits} bits; bits per layer in module order\n")
    print(out.to_string())
    return 0


# ----------------------------------------------------------------------------- export


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet20-mnist5k",
                   help="shipped checkpoint name, torchvision model name, or a .pt state_dict "
                        "path (default: %(default)s)")
    p.add_argument("--arch", help="architecture of a bare state_dict checkpoint")
    p.add_argument("--plan", type=Path, required=True, metavar="FILE",
                   help="a plan saved as JSON (mixquant-lite search --json FILE)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="the safetensors file to write")
    p.add_argument("--brecq-iters", type=int, default=None, metavar="N",
                   help="run BRECQ with the plan (N steps per unit, MNIST-5k calibration images) "
                        "and write its learned integer codes; default: round-to-nearest")
    p.add_argument("--gptq", action="store_true",
                   help="run GPTQ with the plan (MNIST-5k calibration images) and write its codes")
    p.add_argument("--group-size", type=int, default=None, choices=(32, 64, 128),
                   help="per-group grids of this size (overrides the plan's granularity)")
    p.add_argument("--n-calib", type=int, default=256, help="BRECQ / GPTQ calibration images")


def _run_export(args: argparse.Namespace) -> int:
    from .packing import export
    from .plan import BitPlan
    from .qspec import QuantSpec

    model, source = load_model(args.model, arch=args.arch)
    try:
        plan = BitPlan.from_json(args.plan)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read the plan {args.plan}: {e}") from None
    arch = args.arch or (args.model if args.model in torchvision_names() else None)
    weights, how = None, "round-to-nearest"
    try:
        if args.group_size is not None:
            plan = plan.with_spec(QuantSpec("per_group", plan.spec.range_method, args.group_size))
        if args.brecq_iters is not None or args.gptq:
            model, plan, weights, how = _calibrated_export(model, plan, args)
        info = export(model.eval(), plan, args.out, arch=arch, weights=weights)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    plan = plan.with_shapes(model)
    print(f"{args.model}: {source}; plan {plan.summary()}; {plan.spec.granularity}, "
          f"{plan.spec.range_method} ranges, {how}")
    if weights is not None:
        print("BatchNorm-folded: load with load_quantized(path, model=fold_bn(float_model))")
    print(f"wrote {info.path}: {info.file:,} bytes = codes {info.codes:,} + scales/zero points "
          f"{info.qparams:,} + float tensors {info.float_tensors:,} + header {info.header:,}")
    print(f"plan storage (codes + grids) {info.plan_size_bytes:,.0f} bytes; the file's codes + "
          f"scales/zero points add {100 * info.quantized_overhead:+.2f} % (byte padding)")
    return 0


def _calibrated_export(model: nn.Module, plan, args: argparse.Namespace):
    """BRECQ (``--brecq-iters``) or GPTQ (``--gptq``) of the BatchNorm-folded ``model`` with
    ``plan``: the quantized model, the plan it used, its integer codes and a description."""
    from .gptq import gptq
    from .recon import brecq, fold_bn
    from .zoo.data import calibration_batch

    if args.model not in ("resnet20-mnist5k", "mobilenetv2-mnist5k"):
        raise CLIError("--brecq-iters / --gptq calibrate on MNIST-5k: use a shipped MNIST-5k model")
    if args.brecq_iters is not None and args.gptq:
        raise CLIError("--brecq-iters and --gptq exclude each other")
    calib = calibration_batch(args.n_calib)
    if args.gptq:
        folded = fold_bn(model)
        qmodel, rep = gptq(folded, calib.split(32), plan.with_shapes(folded))
        return qmodel, plan, rep.weights, f"GPTQ ({args.n_calib} calibration images)"
    qmodel, report = brecq(model, calib, plan, iters=args.brecq_iters, n_calib=args.n_calib,
                           batch_size=min(32, args.n_calib), first_last_bits=None,
                           progress=False)
    return qmodel, report.plan, report.weights, f"BRECQ ({args.brecq_iters} steps/unit)"


# ----------------------------------------------------------------------------- reproduce


def _add_reproduce_args(p: argparse.ArgumentParser) -> None:
    from .reproduce.cli_args import add_reproduce_args

    add_reproduce_args(p)


def reproduce_config(args: argparse.Namespace) -> ReproduceConfig:
    """The :class:`~mixquant_lite.reproduce.ReproduceConfig` of parsed ``reproduce`` options
    (:func:`mixquant_lite.reproduce.cli_args.config_from_args`; bad values: :class:`CLIError`)."""
    from .reproduce.cli_args import config_from_args

    try:
        return config_from_args(args, " ".join(["mixquant-lite", *sys.argv[1:]]))
    except (TypeError, ValueError) as e:
        raise CLIError(str(e)) from None


def _run_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import render_markdown, reproduce
    from .zoo.testbeds import testbed_stem

    if args.render_only:
        path = render_markdown(Path(args.out_dir) / testbed_stem(args.model, args.dataset))
        print(path.read_text())
        print(f"wrote {path} (and the paired tests into its .json)")
        return 0
    config = reproduce_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    df = reproduce(config)
    print(Path(df.attrs["paths"][1]).read_text())
    print("wrote " + ", ".join(df.attrs["paths"]))
    return 0


# ----------------------------------------------------------------------------- entry point

Command = tuple[
    Callable[[argparse.ArgumentParser], object], Callable[[argparse.Namespace], int], str
]
COMMANDS: dict[str, Command] = {
    "search": (_add_search_args, _run_search,
               "QE table of a model and one bit-width plan (a QEM or a budget)"),
    "sweep": (_add_sweep_args, _run_sweep, "MixQuant plans for several QEMs from one QE table"),
    "export": (_add_export_args, _run_export,
               "apply a saved plan JSON to a model and write integer codes (safetensors)"),
    "reproduce": (_add_reproduce_args, _run_reproduce, "the results table: vanilla PTQ, "
                  "MixQuant, budget plans and BRECQ at matched bits"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``mixquant-lite`` parser, one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="mixquant-lite",
        description="MixQuant mixed-precision post-training quantization (mixquant-lite).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sp)
        sp.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 usage or input error)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CLIError as e:
        print(f"mixquant-lite: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
