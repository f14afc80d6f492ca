"""How long will a BRECQ job take on this runtime? A short measured warm-up, extrapolated.

:func:`estimate_brecq_time` runs :func:`mixquant_lite.recon.brecq` for a few steps per unit on
the model's own device (after a tiny untimed run that pays for one-off costs: CUDA context,
kernel selection, first allocations), reads each unit's measured steps per second and its fixed
cost (input/target capture and the before/after losses), optionally times a few evaluation
batches, and extrapolates to a whole job: ``n_runs`` BRECQ runs of ``iters`` steps per unit plus
``n_evals`` evaluations. :func:`estimate_reproduce_time` takes the counts of
:func:`mixquant_lite.reproduce.run.workload`, the driver's own run list.

GPTQ runs (section ``gptq``) are counted as evaluation-equivalents: one GPTQ run costs about
:data:`GPTQ_FORWARDS` FP32 forward passes over the calibration images (measured 14.9x on the
ResNet-20 and 17.4x on the MobileNetV2 with 1,024 images in batches of 128,
``benchmarks/results/gptq_speed-*.md``; 24-25x with 256 images in batches of 32, the driver's
setting, one thread), timed at the measured per-image evaluation speed.

The estimate excludes downloads and anything the warm-up did not exercise; identical plans are
cached by ``reproduce``, so its counts are upper bounds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..quant import check_bits
from ..validate import check_int
from ..zoo.testbeds import testbed
from .config import ReproduceConfig

__all__ = ["BrecqTimeEstimate", "estimate_brecq_time", "estimate_reproduce_time",
           "GPTQ_FORWARDS", "gptq_eval_equivalents"]

GPTQ_FORWARDS = 26  # one GPTQ run ~ this many FP32 forwards over the calibration set (upper)


def gptq_eval_equivalents(n_runs: int, n_calib: int, n_eval_images: int) -> int:
    """``n_runs`` GPTQ runs on ``n_calib`` calibration images as a number of evaluations of
    ``n_eval_images`` images: ``ceil(n_runs * GPTQ_FORWARDS * n_calib / n_eval_images)``."""
    if n_runs <= 0:
        return 0
    return math.ceil(n_runs * GPTQ_FORWARDS * n_calib / max(1, n_eval_images))


@dataclass(frozen=True)
class BrecqTimeEstimate:
    """A measured estimate of a BRECQ job's wall time on one runtime.

    Attributes:
        device: torch device string the warm-up ran on (``"cpu"``, ``"cuda:0"``).
        device_name: GPU name or CPU model.
        threads: torch CPU threads during the warm-up.
        units: reconstruction units (module paths) in execution order.
        steps_per_s: measured optimisation steps per second of each unit (``units`` order).
        unit_overhead_s: measured fixed seconds per unit and run (capture, losses, set-up).
        warmup_steps: steps per unit of the measured warm-up run.
        warmup_s: wall seconds of the whole measurement (both warm-up runs and evaluation).
        iters: steps per unit of the job.
        n_runs: BRECQ runs in the job.
        brecq_run_s: estimated seconds of one BRECQ run (sum over units).
        eval_s: estimated seconds of one evaluation (0 without ``eval_loader``).
        n_evals: evaluations in the job.
        total_s: estimated seconds of the job: ``n_runs * brecq_run_s + n_evals * eval_s``.
        limit_s: the time available (e.g. a Colab session), or ``None``.
    """

    device: str
    device_name: str
    threads: int
    units: tuple[str, ...]
    steps_per_s: tuple[float, ...]
    unit_overhead_s: tuple[float, ...]
    warmup_steps: int
    warmup_s: float
    iters: int
    n_runs: int
    brecq_run_s: float
    eval_s: float
    n_evals: int
    total_s: float
    limit_s: float | None = None

    @property
    def fits(self) -> bool | None:
        """Whether ``total_s <= limit_s`` (``None`` without a limit)."""
        return None if self.limit_s is None else self.total_s <= self.limit_s

    def __str__(self) -> str:
        slowest = min(self.steps_per_s) if self.steps_per_s else float("nan")
        line = (
            f"Estimated {_hms(self.total_s)} on {self.device_name} ({self.device}): "
            f"{self.n_runs} BRECQ runs x {_hms(self.brecq_run_s)} ({self.iters} steps per unit, "
            f"{len(self.units)} units, slowest {slowest:.0f} steps/s)"
            + (f" + {self.n_evals} evaluations x {self.eval_s:.1f} s" if self.n_evals else "")
            + f"; measured in a {self.warmup_s:.0f} s warm-up."
        )
        if self.limit_s is not None:
            line += (f" {'Fits in' if self.fits else 'Does NOT fit in'} the "
                     f"{_hms(self.limit_s)} available.")
        return line


def _hms(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def estimate_brecq_time(
    model: nn.Module,
    calib_data: Any,
    *,
    n_runs: int = 1,
    iters: int = 20000,
    n_calib: int = 1024,
    bits: int = 3,
    act_bits: int | None = None,
    warmup_steps: int = 20,
    eval_loader: Iterable | None = None,
    n_evals: int = 0,
    eval_batches: int = 3,
    limit_s: float | None = None,
    **brecq_kw: Any,
) -> BrecqTimeEstimate:
    """Measure a short BRECQ warm-up on ``model``'s device and extrapolate to a whole job.
    Thirteen parameters: the job's counts and the warm-up's settings, each with a default.

    Args:
        model: the float model, on the device the job will use (not modified).
        calib_data: calibration images as for :func:`~mixquant_lite.recon.brecq` (a tensor
            ``(N, C, H, W)`` or batches); at least ``n_calib`` samples.
        n_runs: BRECQ runs in the job (e.g. ``workload(config)["brecq_runs"]``).
        iters: steps per unit of each run (quick mode 200, the recipe 20,000).
        n_calib: calibration samples of each run (quick 256, recipe 1,024): the warm-up uses
            the same number, so its capture cost is the job's.
        bits, act_bits: weight and activation bit-widths of the warm-up (speed hardly depends
            on the weight bits; activation quantizers add work).
        warmup_steps: steps per unit of the measured run (>= 5); a tiny untimed run (2 steps)
            precedes it.
        eval_loader: optional evaluation batches ``(x, y)`` or ``x``; the first
            ``eval_batches`` (after one untimed batch) are timed with data loading included and
            extrapolated to ``len(eval_loader.dataset)`` images (or ``len(eval_loader)``
            batches when there is no dataset).
        n_evals: evaluations in the job (needs ``eval_loader`` when > 0).
        limit_s: seconds available (e.g. a Colab session); sets ``fits``.
        **brecq_kw: passed to both warm-up runs (e.g. ``per_channel``, ``batch_size``).

    Returns:
        A :class:`BrecqTimeEstimate` (seconds; ``str()`` gives one readable line).

    Raises:
        ValueError: a count out of range, ``n_evals > 0`` without ``eval_loader``, or what
            :func:`~mixquant_lite.recon.brecq` raises for the model and data.
    """
    from ..recon import brecq  # the recon package imports heavy modules; only when needed

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_runs = check_int("n_runs", n_runs, 0)
    iters = check_int("iters", iters, 0)
    n_calib = check_int("n_calib", n_calib, 1)
    warmup_steps = check_int("warmup_steps", warmup_steps, 5)
    n_evals = check_int("n_evals", n_evals, 0)
    eval_batches = check_int("eval_batches", eval_batches, 1)
    bits = check_bits(bits)
    if n_evals > 0 and eval_loader is None:
        raise ValueError("n_evals > 0 needs eval_loader (the batches to time)")
    if limit_s is not None and not (isinstance(limit_s, int | float) and limit_s > 0):
        raise ValueError(f"limit_s must be a positive number of seconds or None, got {limit_s!r}")
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    kw = dict(act_bits=act_bits, n_calib=n_calib, progress=False, **brecq_kw)

    t_all = time.perf_counter()
    brecq(model, calib_data, bits, iters=2, **kw)  # one-off costs, not timed
    _sync(dev)
    _, rep = brecq(model, calib_data, bits, iters=warmup_steps, **kw)
    _sync(dev)
    units, speeds, overheads = [], [], []
    for u in rep.units:
        units.append(u.name)
        if u.iters > 0 and u.it_per_s > 0:
            loop = u.iters / u.it_per_s
            speeds.append(float(u.it_per_s))
        else:  # a unit that is not optimised (the stem stays at nearest): fixed cost only
            loop = 0.0
            speeds.append(float("inf"))
        overheads.append(max(0.0, u.seconds - loop))
    run_s = sum(o + (iters / v if iters and math.isfinite(v) else 0.0)
                for v, o in zip(speeds, overheads, strict=True))
    setup_s = max(0.0, rep.seconds - sum(u.seconds for u in rep.units))  # folding, checks
    run_s += setup_s

    eval_s = _time_eval(model, eval_loader, eval_batches, dev) if eval_loader is not None else 0.0
    warm_s = time.perf_counter() - t_all
    total = n_runs * run_s + n_evals * eval_s
    return BrecqTimeEstimate(
        device=str(dev), device_name=_device_name(dev), threads=torch.get_num_threads(),
        units=tuple(units), steps_per_s=tuple(speeds), unit_overhead_s=tuple(overheads),
        warmup_steps=warmup_steps, warmup_s=warm_s, iters=iters, n_runs=n_runs,
        brecq_run_s=run_s, eval_s=eval_s, n_evals=n_evals, total_s=total,
        limit_s=None if limit_s is None else float(limit_s),
    )


@torch.no_grad()
def _time_eval(model: nn.Module, loader: Iterable, n_batches: int, dev: torch.device) -> float:
    """Seconds of one pass over ``loader`` (data loading included), from ``n_batches`` timed
    batches after one untimed one."""
    was_training = model.training
    model.eval()
    seen = images = 0
    t0 = None
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x.to(dev, non_blocking=True))
            _sync(dev)
            if t0 is None:  # the first batch pays for workers starting: not timed
                t0 = time.perf_counter()
                continue
            seen += 1
            images += len(x)
            if seen >= n_batches:
                break
    finally:
        model.train(was_training)
    if t0 is None or seen == 0:
        raise ValueError("eval_loader must yield at least 2 batches to be timed")
    per_image = (time.perf_counter() - t0) / images
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        total = len(dataset)
    else:
        total = images / seen * len(loader)  # type: ignore[arg-type]
    return per_image * total


def estimate_reproduce_time(
    config: ReproduceConfig,
    *,
    warmup_steps: int = 20,
    eval_batches: int = 3,
    limit_s: float | None = None,
) -> BrecqTimeEstimate:
    """Estimate ``reproduce(config)`` from a warm-up.

    Builds the same testbed as ``reproduce`` (so downloads happen here, once), moves the model
    to ``config.device`` (default CUDA when available), and calls :func:`estimate_brecq_time`
    with :func:`~mixquant_lite.reproduce.run.workload`'s counts of the driver's own run list
    (QE tables, searches and vanilla quantization take seconds and are not counted; GPTQ runs
    are added as :func:`gptq_eval_equivalents`). Colab::

        cfg = ReproduceConfig.preset("quick", model="resnet18", dataset="imagenette",
                                     device="cuda", act_bits=(None,))
        print(estimate_reproduce_time(cfg, limit_s=12 * 3600))
    """
    from .run import workload

    work = workload(config)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bed = testbed(config.model, config.dataset, pretrained=config.pretrained,
                  n_calib=config.n_calib, seed=config.seed, batch_size=config.batch_size,
                  workers=config.workers, image_size=config.image_size)
    model = bed.model.to(device).eval()
    n_eval_images = len(getattr(bed.loader, "dataset", ())) or config.batch_size
    gptq_evals = gptq_eval_equivalents(work["gptq_runs"], config.n_calib, n_eval_images)
    return estimate_brecq_time(
        model, bed.calib, n_runs=work["brecq_runs"], iters=config.iters,
        n_calib=config.n_calib, warmup_steps=warmup_steps, eval_loader=bed.loader,
        n_evals=work["evals"] + gptq_evals, eval_batches=eval_batches, limit_s=limit_s,
        batch_size=min(32, config.n_calib),
    )
