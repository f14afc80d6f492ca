"""How long will a BRECQ job take on this runtime? A short measured warm-up, extrapolated.

:func:`estimate_brecq_time` runs :func:`mixquant_lite.recon.brecq` for a few steps per unit on
the model's own device (after a tiny untimed run that pays for one-off costs: CUDA context,
kernel selection, first allocations), reads each unit's measured steps per second and its fixed
cost (input/target capture and the before/after losses), optionally times a few evaluation
batches, and extrapolates to a whole job: ``n_runs`` BRECQ runs of ``iters`` steps per unit plus
``n_evals`` evaluations. :func:`reproduce_workload` counts those for
:func:`mixquant_lite.results.reproduce`.

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

from .quant import check_bits

__all__ = ["BrecqTimeEstimate", "estimate_brecq_time", "estimate_reproduce_time",
           "reproduce_workload"]


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


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


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

    Args:
        model: the float model, on the device the job will use (not modified).
        calib_data: calibration images as for :func:`~mixquant_lite.recon.brecq` (a tensor
            ``(N, C, H, W)`` or batches); at least ``n_calib`` samples.
        n_runs: BRECQ runs in the job (e.g. ``reproduce_workload(...)["brecq_runs"]``).
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
    from .recon import brecq  # the recon package imports heavy modules; only when needed

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_runs = _int("n_runs", n_runs, 0)
    iters = _int("iters", iters, 0)
    n_calib = _int("n_calib", n_calib, 1)
    warmup_steps = _int("warmup_steps", warmup_steps, 5)
    n_evals = _int("n_evals", n_evals, 0)
    eval_batches = _int("eval_batches", eval_batches, 1)
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


def reproduce_workload(
    *,
    quick: bool = True,
    act_bits: tuple[int | None, ...] = (None,),
    brecq_bits: tuple[int, ...] | None = None,
    brecq_between: tuple[float, ...] | None = None,
    vanilla_bits: tuple[int, ...] | None = None,
    qem_grid: tuple[float, ...] | None = None,
) -> dict[str, int]:
    """Upper bounds on the work of :func:`mixquant_lite.results.reproduce` with these settings.

    Returns ``{"brecq_runs", "evals", "iters", "n_calib"}``: BRECQ runs (uniform, MixQuant and
    budget plans at every BRECQ point and activation setting; identical plans are run once, so
    fewer may run), evaluations of the test set (FP32, every vanilla plan, the BRECQ section's
    vanilla plans, every BRECQ model), and the steps per unit and calibration samples of each run.
    """
    from . import results as R

    settings = R.QUICK if quick else R.FULL
    brecq_bits = R.BRECQ_BITS if brecq_bits is None else tuple(brecq_bits)
    brecq_between = R.BRECQ_BETWEEN if brecq_between is None else tuple(brecq_between)
    vanilla_bits = R.VANILLA_BITS if vanilla_bits is None else tuple(vanilla_bits)
    qem_grid = R.QEM_GRID if qem_grid is None else tuple(qem_grid)
    mixed = settings.get("mixed_act_bits")
    points = sorted({*map(float, brecq_bits), *map(float, brecq_between)})
    runs = vanilla_evals = 0
    for x in points:
        integer = float(x).is_integer() and int(x) in brecq_bits
        vanilla_evals += 3 if integer else 2
        for act in act_bits:
            runs += int(integer)
            if mixed is None or act in mixed:
                runs += 2
    evals = 1 + len(vanilla_bits) + 2 * len(qem_grid) + vanilla_evals + runs
    return {"brecq_runs": runs, "evals": evals, "iters": int(settings["iters"]),
            "n_calib": int(settings["n_calib"])}


def estimate_reproduce_time(
    model_name: str = "resnet20-mnist5k",
    dataset: str = "mnist5k",
    *,
    quick: bool = False,
    iters: int | None = None,
    n_calib: int | None = None,
    act_bits: tuple[int | None, ...] = (None, 8),
    device: str | None = None,
    batch_size: int = 256,
    workers: int = 2,
    image_size: int = 224,
    pretrained: bool = True,
    seed: int = 0,
    warmup_steps: int = 20,
    eval_batches: int = 3,
    limit_s: float | None = None,
) -> BrecqTimeEstimate:
    """Estimate :func:`mixquant_lite.results.reproduce` with the same arguments, from a warm-up.

    Builds the same model, calibration images and evaluation loader as ``reproduce`` (so
    downloads happen here, once), moves the model to ``device`` (default CUDA when available),
    and calls :func:`estimate_brecq_time` with :func:`reproduce_workload`'s counts: the upper
    bound of BRECQ runs and evaluations (QE tables, searches and vanilla quantization take
    seconds and are not counted). Colab example::

        est = estimate_reproduce_time("resnet18", "imagenette", quick=True, device="cuda",
                                      act_bits=(None,), limit_s=12 * 3600)
        print(est)  # e.g. "Estimated 1 h 05 min on Tesla T4 (cuda:0): 11 BRECQ runs x ..."
    """
    from . import results as R

    work = reproduce_workload(quick=quick, act_bits=tuple(act_bits))
    n_calib = work["n_calib"] if n_calib is None else n_calib
    iters = work["iters"] if iters is None else iters
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dataset == "mnist5k":
        setup = R._mnist_setup(model_name, pretrained, n_calib, seed, batch_size)
    else:
        setup = R._imagenet_setup(model_name, dataset, pretrained, n_calib, seed, batch_size,
                                  workers, image_size)
    model = setup.model.to(device).eval()
    return estimate_brecq_time(
        model, setup.calib, n_runs=work["brecq_runs"], iters=iters, n_calib=n_calib,
        warmup_steps=warmup_steps, eval_loader=setup.loader, n_evals=work["evals"],
        eval_batches=eval_batches, limit_s=limit_s, batch_size=min(32, n_calib),
    )
