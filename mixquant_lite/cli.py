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
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import results
from .plan import _fmt_bytes

__all__ = ["main", "build_parser", "COMMANDS", "CLIError", "load_model", "parse_bits"]


class CLIError(Exception):
    """A user-facing error: printed as ``mixquant-lite: error: ...``, exit status 2."""


# ----------------------------------------------------------------------------- models


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_arch(arch: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """An untrained model of architecture ``arch`` shaped to fit ``state``."""
    from .export import build_architecture

    try:
        return build_architecture(arch, state)
    except ValueError:
        raise CLIError(f"unknown --arch {arch!r}: use resnet20 or a torchvision name") from None


def _load_checkpoint(path: Path, arch: str | None) -> nn.Module:
    if not path.is_file():
        raise CLIError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused (a whole pickled model) or not a torch file
        raise CLIError(
            f"could not read {path} with torch.load(weights_only=True): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. Save a state_dict "
            "(torch.save(model.state_dict(), path))."
        ) from None
    if not isinstance(obj, Mapping):
        raise CLIError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            arch = arch or obj.get("arch")
            obj = obj[key]
            break
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CLIError(f"{path} holds no tensors")
    if arch is None:
        raise CLIError(
            f"{path} is a bare state_dict: pass --arch (resnet20 or a torchvision model name)"
        )
    model = _build_arch(arch, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CLIError(f"{path} does not fit --arch {arch}: {str(e).splitlines()[0]}") from None
    return model.eval()


def load_model(
    spec: str, *, random_init: bool = False, arch: str | None = None
) -> tuple[nn.Module, str]:
    """The model named by ``spec`` and a one-line description of where its weights come from.

    ``spec``: an existing file (a state_dict checkpoint), a torchvision model name (pretrained
    unless ``random_init``), or a shipped checkpoint name (:func:`mixquant_lite.models.
    load_pretrained`). Raises :class:`CLIError` with a clear message when it cannot be had;
    pretrained weights are never silently replaced by random ones.
    """
    from .models import (
        TORCHVISION_RESNETS,
        CheckpointError,
        PretrainedUnavailableError,
        load_pretrained,
        torchvision_resnet,
    )

    path = Path(spec)
    is_file = path.suffix in (".pt", ".pth", ".ckpt", ".bin") or path.exists()
    if random_init and (is_file or spec not in _torchvision_names()):
        raise CLIError("--random-init applies to torchvision model names only")
    if is_file:
        return _load_checkpoint(path, arch), f"checkpoint {path}"
    if spec in _torchvision_names():
        try:
            if spec in TORCHVISION_RESNETS:
                model = torchvision_resnet(spec, pretrained=not random_init)
            else:
                import torchvision

                weights = None if random_init else "DEFAULT"
                try:
                    model = torchvision.models.get_model(spec, weights=weights).eval()
                except Exception as e:  # download / hash errors: no pretrained weights here
                    raise PretrainedUnavailableError(
                        f"pretrained weights for {spec} could not be loaded "
                        f"({type(e).__name__}: {e})"
                    ) from None
        except PretrainedUnavailableError as e:
            raise CLIError(
                f"{e}\nPretrained weights are unavailable, and random ones are never used "
                "silently: pass --random-init to search on random weights knowingly."
            ) from None
        how = "RANDOM (untrained) weights" if random_init else "pretrained weights"
        return model, f"torchvision {spec}, {how}"
    try:
        return load_pretrained(spec), f"shipped checkpoint {spec}"
    except ValueError as e:
        raise CLIError(
            f"unknown model {spec!r}: not a file, not a torchvision model name, and not a "
            f"shipped checkpoint ({e})"
        ) from None
    except CheckpointError as e:
        raise CLIError(str(e)) from None


# ----------------------------------------------------------------------------- arguments


def parse_bits(text: str) -> tuple[int, ...]:
    """``"2-8"`` -> ``(2, ..., 8)``; ``"2,4,8"`` and mixes like ``"2-4,8"`` work too."""
    from .quant import check_bit_list

    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"bad bit-width list {text!r} (e.g. 2-8 or 2,4,8)")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise argparse.ArgumentTypeError(f"bad range {part!r}: {hi} < {lo}")
        out += range(lo, hi + 1)
    try:
        return check_bit_list(out)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fix_item(text: str) -> tuple[str, int]:
    name, sep, bits = text.rpartition("=")
    if not sep or not name or not bits.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected LAYER=BITS, got {text!r}")
    return name, int(bits)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


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
    g.add_argument("--bits", type=parse_bits, default=tuple(range(2, 9)),
                   help="candidate bit-widths, e.g. 2-8 or 2,4,8 (default: 2-8)")
    g.add_argument("--per-channel", action="store_true",
                   help="one quantization grid per output channel (default: per tensor)")
    g.add_argument("--device", default="cpu", help="torch device for the QE table (default: cpu)")
    g.add_argument("--baseline-bits", type=int, default=None,
                   help="MixQuant baseline bit-width (default: 8, or the largest candidate "
                        "when 8 is not one)")
    g.add_argument("--fix", type=_fix_item, action="append", default=[], metavar="LAYER=BITS",
                   help="keep LAYER at BITS (repeatable)")
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
    g.add_argument("--qem", type=_positive, help="MixQuant QE multiplier (default: 100)")
    g.add_argument("--budget-avg-bits", type=_positive, metavar="BITS",
                   help="exact least-error plan with at most this average bit-width")
    g.add_argument("--budget-bytes", type=_positive, metavar="BYTES",
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
    print(f"average bits {plan.avg_bits:.3f} | weights {_fmt_bytes(plan.size_bytes)} vs "
          f"{_fmt_bytes(plan.f32_bytes)} in f32 ({plan.compression:.2f}x smaller) | "
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
    p.add_argument("--qem", type=_positive, nargs="+", default=[1, 10, 100, 1000, 10000],
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
        "weights": [_fmt_bytes(v) for v in df["size_bytes"]],
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


def _run_export(args: argparse.Namespace) -> int:
    from .export import export
    from .plan import BitPlan

    model, source = load_model(args.model, arch=args.arch)
    try:
        plan = BitPlan.from_json(args.plan)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read the plan {args.plan}: {e}") from None
    arch = args.arch or (args.model if args.model in _torchvision_names() else None)
    try:
        info = export(model.eval(), plan, args.out, arch=arch)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    print(f"{args.model}: {source}; plan {plan.summary()}")
    print(f"wrote {info.path}: {info.file:,} bytes = codes {info.codes:,} + scales/zero points "
          f"{info.qparams:,} + float tensors {info.float_tensors:,} + header {info.header:,}")
    print(f"plan.size_bytes {plan.size_bytes:,.0f}; codes + scales/zero points are "
          f"{100 * info.quantized_overhead:+.2f} % of it")
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
    "reproduce": (
        results.add_arguments,
        results.run,
        "the results table: vanilla PTQ, MixQuant, budget plans and BRECQ at matched bits",
    ),
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
