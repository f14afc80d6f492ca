"""``mixquant-lite reproduce``: the results table (MixQuant + vanilla PTQ, MixQuant + BRECQ).

    mixquant-lite reproduce --quick                       # offline default, CPU, < 15 min
    mixquant-lite reproduce                               # BRECQ recipe settings (hours on CPU)
    mixquant-lite reproduce --model resnet18 --dataset imagenette   # Colab / GPU path

Writes ``<out_dir>/<dataset>-<model>.csv``, ``.md`` (table + provenance) and ``.json``
(provenance). One row per quantized model:

``section``
    ``vanilla``: everything as the MixQuant rule decides, first and last layer included
    (``mixquant(table, qem)``, no fixed layers), vanilla asymmetric round-to-nearest on the
    unfolded model (:meth:`BitPlan.apply`).
    ``brecq``: the BRECQ recipe's setting, first and last layer at 8 bits for *every* method
    (``fixed={first: 8, last: 8}``), so that vanilla, BRECQ, MixQuant + BRECQ and budget plan +
    BRECQ rows compare like with like. BRECQ quantizes BatchNorm-folded weights, so its plans come
    from the QE table of the folded model; the vanilla rows of this section quantize the unfolded
    weights (BatchNorm kept in float, the package's vanilla PTQ), which is the easier problem.
``method``
    ``FP32``, ``vanilla``, ``MixQuant + vanilla``, ``budget + vanilla`` (:func:`plan_for_budget`,
    least total squared weight error at the same average bit-width), ``BRECQ``,
    ``MixQuant + BRECQ``, ``budget + BRECQ``.
``weight_bits``
    average weight bit-width actually achieved, weighted by each layer's number of weights.
``act_bits``
    activation bit-width (empty: float activations).
``weight_MB``
    weight storage, ``sum(numel * bits) / 8 / 1e6`` (biases and quantization grids excluded).
``top1``
    top-1 accuracy (%) on the evaluation split.
``wall_s``
    seconds to produce the quantized model (search + quantization or reconstruction); the QE
    tables and the evaluations are not included (provenance lists them).
``compare_to``, ``matched``
    the uniform row at the nearest average bit-width in the same section (and activation
    setting), and whether this row's average is within 0.1 bit of it; when not, by how much the
    plan is bigger or smaller.
``plan``
    the bit-width histogram, ``bits x layers``.

MixQuant at a target average bit-width uses the QEM whose plan's average is closest to the
target (ties: the smaller plan); the budget plan uses ``plan_for_budget(avg_bits=target)``. A
plan identical to one already run is not run again (its row says so in ``note``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .evaluate import correct_mask
from .plan import BitPlan
from .recon import brecq, fold_bn
from .search import mixquant, plan_for_budget, qem_for_budget
from .table import QETable, qe_table

__all__ = ["reproduce", "add_arguments", "run", "QUICK", "FULL", "COLUMNS"]

COLUMNS = [
    "section", "method", "qem", "weight_bits", "act_bits", "weight_MB", "top1", "wall_s",
    "compare_to", "matched", "plan", "note",
]
MATCH_TOL = 0.1  # bits
# Settings of the two modes. FULL is the BRECQ recipe (1,024 calibration images, 20,000 steps per
# block); QUICK fits 15 minutes on 2 CPU cores.
# In QUICK the MixQuant / budget-plan BRECQ rows run with float activations only (the uniform
# BRECQ rows run at every activation setting); FULL runs every BRECQ row at every setting.
FULL: dict[str, Any] = dict(iters=20000, n_calib=1024, mixed_act_bits=None)
QUICK: dict[str, Any] = dict(iters=200, n_calib=256, mixed_act_bits=(None,))
VANILLA_BITS = (8, 6, 5, 4, 3, 2)
BRECQ_BITS = (4, 3, 2)
# A mixed target between uniform points, where MixQuant's plan is not a uniform one.
BRECQ_BETWEEN = (2.5,)
QEM_GRID = tuple(float(2**k) for k in range(1, 15))  # 2 .. 16384
MNIST_MODELS = ("resnet20-mnist5k", "resnet20")


# ---------------------------------------------------------------------------- data and model


@dataclass
class _Setup:
    model: nn.Module
    calib: torch.Tensor
    loader: torch.utils.data.DataLoader
    model_tag: str
    dataset_tag: str
    eval_desc: str
    calib_desc: str


def _mnist_setup(model_name: str, pretrained: bool, n_calib: int, seed: int,
                 batch_size: int) -> _Setup:
    from .data import calibration_batch, mnist5k_loader
    from .models import load_pretrained, resnet20

    if model_name not in MNIST_MODELS:
        raise ValueError(
            f"dataset 'mnist5k' goes with model {MNIST_MODELS[0]!r}, got {model_name!r}"
        )
    model = load_pretrained("resnet20-mnist5k") if pretrained else resnet20().eval()
    return _Setup(
        model=model, calib=calibration_batch(n_calib, seed), model_tag="resnet20-mnist5k",
        loader=mnist5k_loader("test", batch_size=batch_size), dataset_tag="mnist5k",
        eval_desc="MNIST-5k test split (1,000 images)",
        calib_desc=f"{n_calib} MNIST-5k training images (seed {seed})",
    )


def _stack(ds, idx: list[int]) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in idx])


def _imagenet_setup(model_name: str, dataset: str, pretrained: bool, n_calib: int, seed: int,
                    batch_size: int, workers: int, image_size: int) -> _Setup:
    from torch.utils.data import DataLoader, Subset

    from .data import imagenet_folder, imagenet_transform, imagenette
    from .models import TORCHVISION_RESNETS, torchvision_resnet

    if model_name not in TORCHVISION_RESNETS:
        raise ValueError(
            f"dataset {dataset!r} goes with a torchvision ResNet {TORCHVISION_RESNETS}, "
            f"got {model_name!r}"
        )
    transform = imagenet_transform(resize=round(image_size * 256 / 224), crop=image_size)
    gen = torch.Generator().manual_seed(seed)
    if dataset.startswith("imagenet:"):
        root = Path(dataset.split(":", 1)[1]).expanduser()
        val = imagenet_folder(root, transform=transform)
        train_root = root.parent / "train"
        if root.name == "val" and train_root.is_dir():
            calib_ds, eval_ds = imagenet_folder(train_root, transform=transform), val
            calib_desc = f"{n_calib} images of {train_root} (seed {seed})"
        else:
            # Only one folder: calibrate on a seeded sample of it and evaluate on the rest.
            perm = torch.randperm(len(val), generator=gen).tolist()
            if len(val) <= n_calib:
                raise ValueError(f"{root} has {len(val)} images; need more than n_calib={n_calib}")
            calib_ds, eval_ds = Subset(val, perm[:n_calib]), Subset(val, perm[n_calib:])
            calib_desc = f"{n_calib} images of {root} (seed {seed}), excluded from evaluation"
        dataset_tag, eval_desc = "imagenet", f"{root} ({len(eval_ds)} images)"
    elif dataset in ("imagenette", "imagenette-160", "imagenette-320"):
        size = dataset.rsplit("-", 1)[1] if "-" in dataset else "160"
        eval_ds = imagenette(size, "val", transform=transform)
        calib_ds = imagenette(size, "train", transform=transform)
        dataset_tag = "imagenette"
        eval_desc = f"Imagenette-{size} val ({len(eval_ds)} images, ImageNet labels)"
        calib_desc = f"{n_calib} Imagenette-{size} training images (seed {seed})"
    else:
        raise ValueError(
            "dataset must be 'mnist5k', 'imagenette', 'imagenette-320' or 'imagenet:/path/to/val', "
            f"got {dataset!r}"
        )
    if len(calib_ds) < n_calib:
        raise ValueError(f"the calibration set has {len(calib_ds)} images, n_calib={n_calib}")
    idx = torch.randperm(len(calib_ds), generator=gen)[:n_calib].tolist()
    return _Setup(
        model=torchvision_resnet(model_name, pretrained=pretrained), calib=_stack(calib_ds, idx),
        loader=DataLoader(eval_ds, batch_size=batch_size, shuffle=False, num_workers=workers),
        model_tag=model_name, dataset_tag=dataset_tag, eval_desc=eval_desc, calib_desc=calib_desc,
    )


# ---------------------------------------------------------------------------- plans


def _plan_desc(plan: BitPlan) -> str:
    counts = Counter(plan.bits.values())
    return " ".join(f"{b}x{counts[b]}" for b in sorted(counts, reverse=True))


def _uniform(table: QETable, bits: int, fixed: dict[str, int]) -> BitPlan:
    return BitPlan({k: fixed.get(k, bits) for k in table.layers}, dict(table.numel),
                   table.per_channel, {"method": "uniform", "bits": bits})


def _mixquant_at(table: QETable, target: float, fixed: dict[str, int]) -> tuple[BitPlan, float]:
    """The MixQuant plan whose average bit-width is closest to ``target`` (ties: smaller)."""
    qems = list(np.geomspace(1.0, 1e7, 600))
    try:
        qems.append(qem_for_budget(table, avg_bits=target, fixed=fixed))
    except ValueError:
        pass  # no MixQuant plan is that small; the closest one is still chosen below
    plans = [(mixquant(table, float(q), fixed=fixed), float(q)) for q in qems]
    return min(plans, key=lambda pq: (abs(pq[0].avg_bits - target), pq[0].avg_bits, pq[1]))


def _matched(avg: float, ref: float) -> str:
    d = avg - ref
    if abs(d) <= MATCH_TOL:
        return f"yes ({d:+.2f})"
    return f"no: {d:+.2f} bit ({'bigger' if d > 0 else 'smaller'})"


# ---------------------------------------------------------------------------- provenance


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if not sha:
        return "none (no commit yet)" + (", uncommitted changes" if dirty else "")
    return sha + (" + uncommitted changes" if dirty else "")


def _command_line() -> str:
    prog = Path(sys.argv[0]).name
    if prog in ("results.py", "__main__.py", "-m"):
        prog = "python -m mixquant_lite.results"
    return " ".join([prog, *sys.argv[1:]])


def _fmt(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _markdown(df: pd.DataFrame, prov: dict[str, Any]) -> str:
    lines = [
        f"# Results: {prov['model']} on {prov['dataset']}",
        "",
        f"- command: `{prov['command']}`",
        f"- mode: {'quick' if prov['quick'] else 'full (BRECQ recipe)'}; BRECQ settings: "
        + ", ".join(f"{k}={v}" for k, v in prov["brecq_settings"].items()),
        f"- evaluation: {prov['eval']}; calibration: {prov['calibration']}",
        f"- git commit: {prov['git_commit']}; torch {prov['torch']}; device {prov['device']} "
        f"({prov['device_name']}), {prov['threads']} thread(s)",
        f"- total wall time: {prov['total_wall_s']:.0f} s (QE tables {prov['qe_table_s']:.1f} s, "
        f"evaluations {prov['eval_s']:.0f} s); {prov['date']}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in ("qem", "weight_bits", "act_bits", "weight_MB", "top1",
                                       "wall_s") else "---" for c in COLUMNS) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    lines += [
        "",
        "Reading the table: compare rows of the same section and activation setting at matched "
        f"average weight bit-width (`matched` = within {MATCH_TOL} bit of `compare_to`). "
        "Section `brecq` keeps the first and last layer at 8 bits for every method; its BRECQ "
        "rows quantize BatchNorm-folded weights (plans from the folded model's QE table), its "
        "vanilla rows the unfolded ones. `top1` in %, `weight_MB` = weights only.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- reproduce


def reproduce(
    model_name: str = "resnet20-mnist5k",
    dataset: str = "mnist5k",
    *,
    quick: bool = False,
    out_dir: str | os.PathLike = "results",
    iters: int | None = None,
    n_calib: int | None = None,
    act_bits: tuple[int | None, ...] = (None, 8),
    vanilla_bits: tuple[int, ...] = VANILLA_BITS,
    brecq_bits: tuple[int, ...] = BRECQ_BITS,
    brecq_between: tuple[float, ...] = BRECQ_BETWEEN,
    qem_grid: tuple[float, ...] = QEM_GRID,
    seed: int = 0,
    per_channel: bool = False,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 256,
    workers: int = 2,
    image_size: int = 224,
    pretrained: bool = True,
    progress: bool = True,
    verbose: bool = True,
    command: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Build the results table, write CSV + markdown + provenance JSON, return the DataFrame.

    Args:
        model_name / dataset: ``"resnet20-mnist5k"`` / ``"mnist5k"`` (offline default), or a
            torchvision ResNet (``"resnet18"``) with ``"imagenette"``, ``"imagenette-320"`` or
            ``"imagenet:/path/to/val"`` (ImageFolder layout; calibration from a sibling
            ``train`` folder when there is one, else from a seeded sample of the folder that is
            then left out of the evaluation).
        quick: 200 steps per block and 256 calibration images instead of the recipe's 20,000
            and 1,024 (``iters`` / ``n_calib`` override either mode), and the MixQuant /
            budget-plan BRECQ rows with float activations only.
        act_bits: activation settings of the BRECQ rows (``None`` = float activations).
        vanilla_bits, brecq_bits, qem_grid: the uniform points and the QEMs of the table.
        brecq_between: "middle-layer" bit-widths between uniform points (2.5: the average of
            first/last at 8 and every other layer at 2.5 bits) where MixQuant + BRECQ and
            budget + BRECQ run without a uniform counterpart.
        per_channel: per-output-channel grids everywhere (QE tables, vanilla, BRECQ).
        device: ``"cpu"``, ``"cuda"``... (default: CUDA when available).
        threads: torch CPU threads for the run (restored afterwards).
        batch_size, workers, image_size: evaluation loader and ImageNet crop size.
        pretrained: ``False`` only for tests (random weights, never for reported numbers).
        progress, verbose: tqdm bars per BRECQ unit; one line per finished row on stderr.
        command: the command line to record (default: ``sys.argv``).
        cache_dir: keep every finished BRECQ run there (one JSON file per plan, activation
            setting and BRECQ settings, written atomically); a re-run with the same folder
            reads them instead of running again, so an interrupted full-recipe run resumes
            at the run it was in.
    """
    t_start = time.perf_counter()
    settings = dict(QUICK if quick else FULL)
    if iters is not None:
        settings["iters"] = iters
    if n_calib is not None:
        settings["n_calib"] = n_calib
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if dataset == "mnist5k":
            setup = _mnist_setup(model_name, pretrained, settings["n_calib"], seed, batch_size)
        else:
            setup = _imagenet_setup(model_name, dataset, pretrained, settings["n_calib"], seed,
                                    batch_size, workers, image_size)
        return _run(setup, settings, quick=quick, out_dir=Path(out_dir), act_bits=act_bits,
                    vanilla_bits=vanilla_bits, brecq_bits=brecq_bits,
                    brecq_between=brecq_between, qem_grid=qem_grid,
                    seed=seed, per_channel=per_channel, device=device, progress=progress,
                    verbose=verbose,
                    command=command or _command_line(),
                    t_start=t_start, cache_dir=None if cache_dir is None else Path(cache_dir))
    finally:
        torch.set_num_threads(old_threads)


def _run(setup: _Setup, settings: dict[str, Any], *, quick: bool, out_dir: Path,
         act_bits: tuple[int | None, ...], vanilla_bits: tuple[int, ...],
         brecq_bits: tuple[int, ...], brecq_between: tuple[float, ...],
         qem_grid: tuple[float, ...], seed: int, per_channel: bool,
         device: str, progress: bool, verbose: bool, command: str,
         t_start: float, cache_dir: Path | None = None) -> pd.DataFrame:
    model = setup.model.to(device).eval()
    rows: list[dict[str, Any]] = []
    eval_s = 0.0

    # Per-image correctness ("0"/"1" per test image) of the model scored last; every row stores
    # the one of its model, so that any two rows can be compared with a paired test.
    last_mask: list[str] = [""]
    masks: list[str] = []

    def top1(m: nn.Module) -> float:
        nonlocal eval_s
        t = time.perf_counter()
        mask = correct_mask(m, setup.loader)
        acc = 100.0 * mask.double().mean().item()
        last_mask[0] = "".join("1" if v else "0" for v in mask.tolist())
        eval_s += time.perf_counter() - t
        return acc

    def add(section, method, plan, acc, wall, *, act=None, qem=None, compare_to=None,
            matched=None, note=None):
        masks.append(last_mask[0])
        rows.append(dict(
            section=section, method=method, qem=qem,
            weight_bits=32.0 if plan is None else plan.avg_bits, act_bits=act,
            weight_MB=(4 * n_weights if plan is None else plan.size_bytes) / 1e6,
            top1=acc, wall_s=wall, compare_to=compare_to, matched=matched,
            plan="f32" if plan is None else _plan_desc(plan), note=note,
        ))
        if verbose:
            r = rows[-1]
            print(f"[{time.perf_counter() - t_start:6.0f} s] {section:7s} {method:18s} "
                  f"W{r['weight_bits']:.2f} A{act or 32}: top-1 {acc:.2f} %, {wall:.1f} s"
                  + (f" ({note})" if note else ""), file=sys.stderr, flush=True)

    t = time.perf_counter()
    table = qe_table(model, per_channel=per_channel)
    folded = fold_bn(model)
    table_f = qe_table(folded, per_channel=per_channel)
    qe_s = time.perf_counter() - t
    n_weights = table.total_numel
    first, last = table.layers[0], table.layers[-1]
    fl8 = {first: 8, last: 8}

    add("vanilla", "FP32", None, top1(model), 0.0)

    # --- vanilla section: the MixQuant rule decides every layer, first and last included.
    vanilla_cache: dict[tuple, tuple[float, float, str, str]] = {}

    def vanilla(plan: BitPlan, label: str) -> tuple[float, float, str | None]:
        key = tuple(plan.bits.items())
        if key in vanilla_cache:
            acc, wall, first_label, last_mask[0] = vanilla_cache[key]
            return acc, wall, f"same plan as {first_label}"
        t = time.perf_counter()
        qmodel = plan.apply(model)
        wall = time.perf_counter() - t
        acc = top1(qmodel)
        vanilla_cache[key] = (acc, wall, label, last_mask[0])
        return acc, wall, None

    uniform_v = {}
    for b in vanilla_bits:
        plan = _uniform(table, b, {})
        uniform_v[b] = plan.avg_bits
        acc, wall, note = vanilla(plan, f"vanilla W{b}")
        add("vanilla", "vanilla", plan, acc, wall, note=note)

    def nearest_uniform(avg: float, uniforms: dict[int, float]) -> tuple[int, float]:
        b = min(uniforms, key=lambda k: (abs(uniforms[k] - avg), k))
        return b, uniforms[b]

    seen_plans = set()
    for qem in qem_grid:
        t = time.perf_counter()
        plan = mixquant(table, qem)
        search_s = time.perf_counter() - t
        if tuple(plan.bits.items()) in seen_plans:
            continue  # the grid's next QEM gave the same plan: one row per distinct plan
        seen_plans.add(tuple(plan.bits.items()))
        b, ref = nearest_uniform(plan.avg_bits, uniform_v)
        acc, wall, note = vanilla(plan, f"MixQuant QEM={qem:g}")
        add("vanilla", "MixQuant + vanilla", plan, acc, wall + search_s, qem=qem,
            compare_to=f"vanilla W{b}", matched=_matched(plan.avg_bits, ref), note=note)
        t = time.perf_counter()
        bplan = plan_for_budget(table, avg_bits=plan.avg_bits)
        search_s = time.perf_counter() - t
        acc, wall, note = vanilla(bplan, f"budget {plan.avg_bits:.2f} bits")
        add("vanilla", "budget + vanilla", bplan, acc, wall + search_s,
            compare_to=f"vanilla W{b}", matched=_matched(bplan.avg_bits, ref), note=note)

    # --- brecq section: first and last layer at 8 bits for every method.
    mixed_act_bits = settings.get("mixed_act_bits")
    brecq_batch = min(32, settings["n_calib"])  # the recipe's 32; tiny test sets use all
    brecq_kw = dict(iters=settings["iters"], n_calib=settings["n_calib"], seed=seed,
                    batch_size=brecq_batch,
                    per_channel=per_channel, progress=progress)
    brecq_cache: dict[tuple, tuple[float, float, str, str]] = {}
    brecq_reports: dict[str, Any] = {}

    def run_brecq(plan: BitPlan, act: int | None, label: str) -> tuple[float, float, str | None]:
        key = (tuple(plan.bits.items()), act)
        if key in brecq_cache:
            acc, wall, first_label, last_mask[0] = brecq_cache[key]
            return acc, wall, f"same plan as {first_label}"
        disk = None
        if cache_dir is not None:
            spec = dict(model=setup.model_tag, dataset=setup.dataset_tag, bits=plan.bits,
                        act=act, **{k: v for k, v in brecq_kw.items() if k != "progress"})
            digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
            disk = cache_dir / f"brecq-{digest}.json"
            if disk.exists():
                hit = json.loads(disk.read_text())
                last_mask[0] = hit["correct"]
                brecq_cache[key] = (hit["top1"], hit["wall_s"], label, hit["correct"])
                brecq_reports[label] = hit["report"]
                return hit["top1"], hit["wall_s"], None
        t = time.perf_counter()
        qmodel, report = brecq(model, setup.calib, plan, act_bits=act, **brecq_kw)
        wall = time.perf_counter() - t
        acc = top1(qmodel)
        brecq_cache[key] = (acc, wall, label, last_mask[0])
        brecq_reports[label] = report.to_frame().to_dict("records")
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(spec=spec, label=label, top1=acc, wall_s=wall,
                                           correct=last_mask[0], report=brecq_reports[label]),
                                      default=str))
            os.replace(tmp, disk)
        return acc, wall, None

    mid = sum(n for k, n in table.numel.items() if k not in fl8)

    def brecq_point(x: float) -> None:
        """Rows at the average bit-width of 'first/last 8, every other layer at x bits'; a
        uniform plan exists for integer x, a mixed target (e.g. 2.5) has MixQuant and budget."""
        target = (x * mid + 8 * (n_weights - mid)) / n_weights
        uniform = float(x).is_integer()
        ref_v = f"vanilla W{x:g} (first/last 8)" if uniform else f"W{x:g} target ({target:.3f})"
        if uniform:
            uplan_v = _uniform(table, int(x), fl8)
            acc, wall, note = vanilla(uplan_v, ref_v)
            add("brecq", "vanilla", uplan_v, acc, wall, note=note)
        t = time.perf_counter()
        mplan, qem = _mixquant_at(table, target, fl8)
        search_s = time.perf_counter() - t
        acc, wall, note = vanilla(mplan, f"MixQuant QEM={qem:g} (first/last 8)")
        add("brecq", "MixQuant + vanilla", mplan, acc, wall + search_s, qem=qem,
            compare_to=ref_v, matched=_matched(mplan.avg_bits, target), note=note)
        t = time.perf_counter()
        bplan = plan_for_budget(table, avg_bits=target, fixed=fl8)
        search_s = time.perf_counter() - t
        acc, wall, note = vanilla(bplan, f"budget {target:.3f} bits (first/last 8)")
        add("brecq", "budget + vanilla", bplan, acc, wall + search_s, compare_to=ref_v,
            matched=_matched(bplan.avg_bits, target), note=note)

        # Plans for BRECQ come from the folded model's QE table (the weights it quantizes).
        uplan = _uniform(table_f, int(x), fl8) if uniform else None
        t = time.perf_counter()
        mplan_f, qem_f = _mixquant_at(table_f, target, fl8)
        msearch_s = time.perf_counter() - t
        t = time.perf_counter()
        bplan_f = plan_for_budget(table_f, avg_bits=target, fixed=fl8)
        bsearch_s = time.perf_counter() - t
        for act in act_bits:
            a = f"A{act}" if act else "A32"
            ref = f"BRECQ W{x:g} {a}" if uniform else f"W{x:g} target ({target:.3f}) {a}"
            if uplan is not None:
                acc, wall, note = run_brecq(uplan, act, ref)
                add("brecq", "BRECQ", uplan, acc, wall, act=act, note=note)
            if mixed_act_bits is not None and act not in mixed_act_bits:
                continue
            acc, wall, note = run_brecq(mplan_f, act, f"MixQuant+BRECQ QEM={qem_f:g} {a}")
            add("brecq", "MixQuant + BRECQ", mplan_f, acc, wall + msearch_s, act=act, qem=qem_f,
                compare_to=ref, matched=_matched(mplan_f.avg_bits, target), note=note)
            acc, wall, note = run_brecq(bplan_f, act, f"budget+BRECQ {target:.3f} bits {a}")
            add("brecq", "budget + BRECQ", bplan_f, acc, wall + bsearch_s, act=act,
                compare_to=ref, matched=_matched(bplan_f.avg_bits, target), note=note)

    for x in sorted({*map(float, brecq_bits), *map(float, brecq_between)}, reverse=True):
        brecq_point(x)

    df = pd.DataFrame(rows, columns=COLUMNS)
    df["act_bits"] = df["act_bits"].astype("Int64")
    total = time.perf_counter() - t_start
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = platform.processor() or platform.machine()
    prov = dict(
        model=setup.model_tag, dataset=setup.dataset_tag, command=command, quick=quick,
        brecq_settings=dict(**{k: v for k, v in settings.items() if k != "mixed_act_bits"},
                            batch_size=brecq_batch, first_last_bits=8, seed=seed,
                            per_channel=per_channel, weight_range="mse", act_bits=list(act_bits),
                            mixed_act_bits=settings.get("mixed_act_bits")),
        eval=setup.eval_desc, calibration=setup.calib_desc, git_commit=_git_commit(),
        torch=torch.__version__, device=device, device_name=device_name,
        threads=torch.get_num_threads(), total_wall_s=total, qe_table_s=qe_s, eval_s=eval_s,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), qem_grid=list(qem_grid),
        vanilla_bits=list(vanilla_bits), brecq_bits=list(brecq_bits),
        brecq_between=list(brecq_between),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{setup.dataset_tag}-{setup.model_tag}"
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.6g")
    stem.with_suffix(".md").write_text(_markdown(df, prov))
    stem.with_suffix(".json").write_text(
        json.dumps({"provenance": prov, "brecq_reports": brecq_reports,
                    "per_image_correct": masks}, indent=2, default=str)
        + "\n"
    )
    df.attrs["provenance"] = prov
    df.attrs["paths"] = [str(stem.with_suffix(s)) for s in (".csv", ".md", ".json")]
    return df


# ---------------------------------------------------------------------------- CLI


def _act_list(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("none", "off", "32", "f32", ""):
            out.append(None)
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"--act-bits takes a comma list of ints or 'none', got {text!r}"
                ) from None
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``reproduce`` options to ``parser`` (a sub-command parser of the CLI)."""
    parser.add_argument("--model", default="resnet20-mnist5k",
                        help="resnet20-mnist5k (default) or a torchvision ResNet, e.g. resnet18")
    parser.add_argument("--dataset", default="mnist5k",
                        help="mnist5k (default), imagenette, imagenette-320 or imagenet:/path/val")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['iters']} steps/block, {QUICK['n_calib']} calibration "
                             "images (default: the BRECQ recipe, 20000 and 1024)")
    parser.add_argument("--out-dir", default="results", help="output folder (default results/)")
    parser.add_argument("--iters", type=int, default=None, help="BRECQ steps per block")
    parser.add_argument("--n-calib", type=int, default=None, help="calibration images")
    parser.add_argument("--act-bits", type=_act_list, default=(None, 8),
                        help="activation settings of the BRECQ rows (default 'none,8')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-channel", action="store_true",
                        help="per-output-channel grids (the published BRECQ numbers use them)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    parser.add_argument("--workers", type=int, default=2, help="ImageNet loader workers")
    parser.add_argument("--image-size", type=int, default=224, help="ImageNet crop size")
    parser.add_argument("--brecq-bits", type=int, nargs="+", default=list(BRECQ_BITS),
                        help="uniform points of the BRECQ section (default 4 3 2)")
    parser.add_argument("--brecq-between", type=float, nargs="*", default=list(BRECQ_BETWEEN),
                        help="mixed middle-layer bit-widths of the BRECQ section (default 2.5)")
    parser.add_argument("--cache-dir", default=None,
                        help="keep each finished BRECQ run here and reuse it (resumable runs)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    parser.add_argument("--quiet", action="store_true", help="no per-row log lines")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``reproduce`` from parsed CLI arguments; print the markdown table and the paths."""
    df = reproduce(
        args.model, args.dataset, quick=args.quick, out_dir=args.out_dir, iters=args.iters,
        n_calib=args.n_calib, act_bits=args.act_bits, seed=args.seed,
        per_channel=args.per_channel, device=args.device, threads=args.threads,
        batch_size=args.batch_size, workers=args.workers, image_size=args.image_size,
        progress=not args.no_progress, verbose=not args.quiet,
        brecq_bits=tuple(args.brecq_bits), brecq_between=tuple(args.brecq_between),
        cache_dir=args.cache_dir,
    )
    md = Path(df.attrs["paths"][1]).read_text()
    print(md)
    print("wrote " + ", ".join(df.attrs["paths"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mixquant_lite.results [options]`` (same as ``mixquant-lite reproduce``)."""
    parser = add_arguments(argparse.ArgumentParser(prog="mixquant-lite reproduce",
                                                   description=__doc__.split("\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
