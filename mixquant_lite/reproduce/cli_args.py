"""The options of ``mixquant-lite reproduce`` (:func:`add_reproduce_args`) and the
:class:`~.config.ReproduceConfig` they make (:func:`config_from_args`); :mod:`mixquant_lite.cli`
wires them into its parser."""
from __future__ import annotations

import argparse

from ..validate import parse_act_bits
from .config import QUICK, ReproduceConfig

__all__ = ["add_reproduce_args", "config_from_args"]


def add_reproduce_args(p: argparse.ArgumentParser) -> None:
    """The options of ``mixquant-lite reproduce`` on ``p``."""
    add = p.add_argument
    add("--model", default="resnet20-mnist5k",
        help="resnet20-mnist5k (default), mobilenetv2-mnist5k or a torchvision ResNet")
    add("--dataset", default="mnist5k",
        help="mnist5k (default), imagenette, imagenette-320 or imagenet:/path/val")
    add("--quick", action="store_true", help=f"the QUICK preset ({QUICK.iters} steps/block, "
        f"{QUICK.n_calib} calibration images; default: FULL, the BRECQ recipe)")
    add("--out-dir", default="results", help="output folder (default results/)")
    add("--iters", type=int, default=None, help="BRECQ steps per block (overrides the preset)")
    add("--n-calib", type=int, default=None, help="calibration images (overrides the preset)")
    add("--act-bits", type=parse_act_bits, default=(None, 8),
        help="activation settings of the BRECQ rows (default 'none,8')")
    add("--seed", type=int, default=0)
    add("--per-channel", action="store_true", help="per-output-channel grids")
    add("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add("--threads", type=int, default=None,
        help="torch CPU threads of this process (the CLI sets it; the library never does)")
    add("--batch-size", type=int, default=256, help="evaluation batch size")
    add("--workers", type=int, default=2, help="ImageNet loader workers")
    add("--image-size", type=int, default=224, help="ImageNet crop size")
    add("--brecq-bits", type=int, nargs="+", default=None,
        help="uniform points of the BRECQ section (default 4 3 2)")
    add("--brecq-between", type=float, nargs="*", default=None,
        help="mixed middle-layer bit-widths of the BRECQ section (default 2.5)")
    add("--gptq-bits", type=int, nargs="*", default=None,
        help="middle-layer bit-widths of the GPTQ section (default 4 3 2; quick 3; none: off)")
    add("--granularity", default="per_channel", choices=("per_tensor", "per_channel",
                                                         "per_group"), help="GPTQ rows' grid")
    add("--group-size", type=int, default=None, help="GPTQ rows' group size (32, 64, 128)")
    add("--cache-dir", default=None,
        help="keep each finished BRECQ run here and reuse it (resumable runs)")
    add("--no-progress", action="store_true", help="no tqdm bars")
    add("--quiet", action="store_true", help="no per-row log lines")
    add("--render-only", action="store_true",
        help="re-render <out-dir>/<dataset>-<model>.md (and the JSON's paired tests) from the "
             "stored .csv and .json; runs nothing")


def config_from_args(args: argparse.Namespace, command: str | None = None) -> ReproduceConfig:
    """The :class:`ReproduceConfig` of parsed ``reproduce`` options (``command``: the command
    line to record).

    Raises:
        TypeError / ValueError: a bad option value (the config's own validation message).
    """
    kw = dict(model=args.model, dataset=args.dataset, out_dir=args.out_dir,
              act_bits=args.act_bits, seed=args.seed, per_channel=args.per_channel,
              device=args.device, batch_size=args.batch_size, workers=args.workers,
              image_size=args.image_size, cache_dir=args.cache_dir,
              progress=not args.no_progress, verbose=not args.quiet,
              gptq_granularity=args.granularity, gptq_group_size=args.group_size,
              command=command)
    for name in ("iters", "n_calib", "brecq_bits", "brecq_between", "gptq_bits"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return ReproduceConfig.preset("quick" if args.quick else "full", **kw)
