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
``search``, ``quantizer``
    how the bit-widths were chosen: ``none`` (the FP32 row), ``uniform``, ``MixQuant`` or
    ``budget`` (:func:`plan_for_budget`, least total squared weight error at the same average
    bit-width); and how the weights were quantized: ``FP32``, ``vanilla`` (round-to-nearest) or
    ``BRECQ``. The returned DataFrame adds the v0.1 one-string ``method`` label
    (:func:`method_label`: ``vanilla``, ``MixQuant + BRECQ``...), derived from these two.
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
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from .evaluate import correct_mask
from .layers import first_last_layers, quantizable_layers, weight_of
from .plan import BitPlan
from .recon import brecq, fold_bn
from .search import mixquant, plan_for_budget, qem_for_budget
from .stats import TIE, paired_compare
from .table import QETable, qe_table

__all__ = [
    "reproduce", "render_markdown", "paired_comparisons", "add_arguments", "run", "QUICK",
    "FULL", "COLUMNS",
]

COLUMNS = [
    "section", "search", "quantizer", "qem", "weight_bits", "act_bits", "weight_MB", "top1",
    "wall_s", "compare_to", "matched", "plan", "note",
]
MATCH_TOL = 0.1  # bits


def method_label(search: str, quantizer: str) -> str:
    """One-string label of a row: the quantizer alone for uniform precision and FP32,
    ``"<search> + <quantizer>"`` otherwise (``"MixQuant + BRECQ"``): the v0.1 ``method``."""
    return quantizer if search in ("uniform", "none") else f"{search} + {quantizer}"
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
# Offline models: name accepted -> (checkpoint in data/, builder name in models.py for tests)
_MNIST = {"resnet20-mnist5k": ("resnet20-mnist5k", "resnet20"),
          "resnet20": ("resnet20-mnist5k", "resnet20"),
          "mobilenetv2-mnist5k": ("mobilenetv2-mnist5k", "mobilenetv2_mnist"),
          "mobilenetv2": ("mobilenetv2-mnist5k", "mobilenetv2_mnist")}
MNIST_MODELS = tuple(_MNIST)


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
    from . import models
    from .data import calibration_batch, mnist5k_loader

    if model_name not in _MNIST:
        raise ValueError(
            f"dataset 'mnist5k' goes with one of the models {sorted(_MNIST)}, got {model_name!r}"
        )
    tag, builder = _MNIST[model_name]
    if pretrained:
        model = models.load_pretrained(tag)
    else:  # random weights (tests only), seeded without touching the global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = getattr(models, builder)().eval()
    return _Setup(
        model=model, calib=calibration_batch(n_calib, seed), model_tag=tag,
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
    with torch.random.fork_rng(devices=[]):  # random weights (tests) seeded, globals untouched
        torch.manual_seed(seed)
        model = torchvision_resnet(model_name, pretrained=pretrained)
    return _Setup(
        model=model, calib=_stack(calib_ds, idx),
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


# ---------------------------------------------------------------------------- paired tests

PAIRED_ALPHA = 0.05
_POINT = re.compile(r"W(\d+(?:\.\d+)?)")


def _search_quantizer(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``search`` and ``quantizer`` columns; a table stored before they existed
    has only the v0.1 ``method`` label (``"MixQuant + BRECQ"``, ``"vanilla"``, ``"FP32"``),
    from which they are derived."""
    if {"search", "quantizer"} <= set(df.columns):
        return df
    if "method" not in df.columns:
        raise ValueError("the results table needs 'search' and 'quantizer' (or 'method') columns")
    df = df.copy()
    method = df["method"].astype(str)
    mixed = method.str.contains(" + ", regex=False)
    df["search"] = np.where(mixed, method.str.split(" + ", n=1, regex=False).str[0],
                            np.where(method == "FP32", "none", "uniform"))
    df["quantizer"] = np.where(mixed, method.str.split(" + ", n=1, regex=False).str[-1], method)
    return df


def _same_act(df: pd.DataFrame, act: Any) -> pd.Series:
    return df["act_bits"].isna() if pd.isna(act) else df["act_bits"] == act


def _reference_row(df: pd.DataFrame, i: int) -> int | None:
    """Index of the uniform row that row ``i``'s ``compare_to`` names (same section, quantizer
    and activation setting, uniform bit-width as in the label), or ``None`` when the label is a
    target with no uniform row (``"W2.5 target (2.516)"``)."""
    r = df.loc[i]
    label = r["compare_to"]
    if pd.isna(label) or "target" in str(label):
        return None
    m = _POINT.search(str(label))
    if m is None:
        return None
    x = float(m.group(1))
    cands = df[(df["section"] == r["section"]) & (df["search"] == "uniform")
               & (df["quantizer"] == r["quantizer"]) & _same_act(df, r["act_bits"])]
    if cands.empty:
        return None
    j = int((cands["weight_bits"] - x).abs().idxmin())
    # first/last at 8 bits put the uniform "W4" row at 4.012 bits: within half a bit of x
    return j if abs(float(df.loc[j, "weight_bits"]) - x) < 0.5 else None


def _budget_row(df: pd.DataFrame, i: int) -> int | None:
    """Index of the budget plan made at the same point as MixQuant row ``i``: the first later
    row of the same section, quantizer, activation setting and ``compare_to``."""
    r = df.loc[i]
    later = df.loc[i + 1:]
    hit = later[(later["search"] == "budget") & (later["section"] == r["section"])
                & (later["quantizer"] == r["quantizer"]) & _same_act(later, r["act_bits"])
                & (later["compare_to"].fillna("") == ("" if pd.isna(r["compare_to"])
                                                      else r["compare_to"]))]
    return None if hit.empty else int(hit.index[0])


def _row_label(r: pd.Series) -> str:
    act = "" if pd.isna(r["act_bits"]) else f" A{int(r['act_bits'])}"
    return f"{method_label(str(r['search']), str(r['quantizer']))} W{r['weight_bits']:.3f}{act}"


def paired_comparisons(df: pd.DataFrame, masks: list[str],
                       alpha: float = PAIRED_ALPHA) -> list[dict[str, Any]]:
    """The paired tests of a results table, from the per-image correctness of its rows.

    Two kinds, in table order: every row with a ``compare_to`` reference against that uniform
    row (``kind="vs uniform"``; rows whose reference is a target with no uniform row are left
    out), and every MixQuant row against the budget plan made at the same point
    (``kind="MixQuant vs budget"``). Each is :func:`mixquant_lite.stats.paired_compare` with
    A = the first row, B = the second (exact McNemar test, Newcombe interval at ``1 - alpha``).

    Args:
        df: the table (``results/<stem>.csv``), one row per quantized model.
        masks: per-image correctness of each row, in row order (``"0"``/``"1"`` strings, the
            ``per_image_correct`` list of ``results/<stem>.json``).

    Returns:
        One dict per pair: ``kind``, ``section``, ``row_a``, ``row_b`` (row positions in the
        table), ``matched`` (row A's ``matched`` entry, ``None`` for MixQuant vs budget), then
        the :class:`~mixquant_lite.stats.PairedComparison` fields (points, p-value, verdict).
    """
    if len(masks) != len(df):
        raise ValueError(f"masks must hold one entry per row of df: {len(masks)} vs {len(df)}")
    df = _search_quantizer(df.reset_index(drop=True))
    pairs: list[tuple[str, int, int]] = []
    for i in range(len(df)):
        j = _reference_row(df, i)
        if j is not None and j != i:
            pairs.append(("vs uniform", i, j))
    for i in df.index[df["search"] == "MixQuant"]:
        j = _budget_row(df, int(i))
        if j is not None:
            pairs.append(("MixQuant vs budget", int(i), j))
    out = []
    for kind, i, j in pairs:
        a, b = df.loc[i], df.loc[j]
        cmp = paired_compare(masks[i], masks[j], labels=(_row_label(a), _row_label(b)),
                             alpha=alpha)
        matched = None if kind != "vs uniform" or pd.isna(a["matched"]) else str(a["matched"])
        out.append(dict(kind=kind, section=str(a["section"]), row_a=i, row_b=j,
                        matched=matched, **cmp.to_dict()))
    return out


def _paired_markdown(paired: list[dict[str, Any]]) -> list[str]:
    if not paired:
        return []
    n = paired[0]["n"]
    level = f"{100 * (1 - paired[0]['alpha']):.0f}%"
    ties = sum(p["verdict"] == TIE for p in paired)
    lines = [
        "",
        "## Paired comparisons",
        "",
        f"Every row with a `compare_to` reference against that uniform row, and every MixQuant "
        f"plan against the budget plan at the same point, on the same {n} test images "
        "(`mixquant_lite.stats.paired_compare` on the per-image correctness stored in the "
        f".json): accuracies (%), difference A - B (points) with its {level} confidence "
        "interval (Newcombe's score interval for paired proportions), the discordant images "
        "(only A right / only B right), the exact McNemar p-value and the verdict: a "
        f"difference is named only when p < {paired[0]['alpha']:g}, otherwise it is a tie "
        "inside the noise. Rows whose plan is the same as the other's have no discordant "
        "image. A row whose `compare_to` is a target with no uniform row is compared with its "
        "budget plan only.",
        "",
        f"{len(paired)} pairs: {sum(p['verdict'] == p['label_a'] + ' better' for p in paired)} "
        f"A better, {sum(p['verdict'] == p['label_b'] + ' better' for p in paired)} B better, "
        f"{ties} ties.",
        "",
        f"| kind | section | A | B | A top1 | B top1 | A - B | {level} CI | only A / only B "
        "| McNemar p | verdict |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for p in paired:
        lines.append(
            f"| {p['kind']} | {p['section']} | {p['label_a']} | {p['label_b']} | "
            f"{p['acc_a']:.1f} | {p['acc_b']:.1f} | {p['diff']:+.2f} | "
            f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] | {p['only_a']} / {p['only_b']} | "
            f"{p['p_value']:.3g} | {p['verdict']} |")
    border = [p for p in paired if p["verdict"] == TIE and (p["ci_low"] > 0 or p["ci_high"] < 0)]
    if border:
        lines += ["", f"{len(border)} pair(s) have an (approximate) interval that just excludes "
                  "0 while the exact test does not reject: borderline differences, reported as "
                  "ties (" + "; ".join(f"{p['label_a']} vs {p['label_b']}" for p in border)
                  + ")."]
    return lines


def _markdown(df: pd.DataFrame, prov: dict[str, Any],
              paired: list[dict[str, Any]] | None = None) -> str:
    # a table stored before the search/quantizer split keeps its own columns
    cols = COLUMNS if set(COLUMNS) <= set(df.columns) else list(df.columns)
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
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---:" if c in ("qem", "weight_bits", "act_bits", "weight_MB", "top1",
                                       "wall_s") else "---" for c in cols) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    lines += [
        "",
        "Reading the table: compare rows of the same section and activation setting at matched "
        f"average weight bit-width (`matched` = within {MATCH_TOL} bit of `compare_to`). "
        "Section `brecq` keeps the first and last layer at 8 bits for every method; its BRECQ "
        "rows quantize BatchNorm-folded weights (plans from the folded model's QE table), its "
        "vanilla rows the unfolded ones. `top1` in %, `weight_MB` = weights only.",
    ]
    lines += _paired_markdown(paired or [])
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
    if dataset == "mnist5k":
        setup = _mnist_setup(model_name, pretrained, settings["n_calib"], seed, batch_size)
    else:
        setup = _imagenet_setup(model_name, dataset, pretrained, settings["n_calib"], seed,
                                batch_size, workers, image_size)
    exp = Experiment(setup, device=device, verbose=verbose, t_start=t_start,
                     cache_dir=None if cache_dir is None else Path(cache_dir),
                     brecq_settings=dict(iters=settings["iters"], n_calib=settings["n_calib"],
                                         seed=seed, batch_size=min(32, settings["n_calib"]),
                                         per_channel=per_channel, progress=progress))
    t = time.perf_counter()
    table = qe_table(exp.model, per_channel=per_channel)
    table_f = qe_table(fold_bn(exp.model), per_channel=per_channel)  # what BRECQ quantizes
    qe_s = time.perf_counter() - t
    exp.add("vanilla", "none", "FP32", None, exp.score(exp.model))
    _vanilla_section(exp, table, vanilla_bits, qem_grid)
    for x in sorted({*map(float, brecq_bits), *map(float, brecq_between)}, reverse=True):
        _brecq_point(exp, x, table, table_f, act_bits, settings.get("mixed_act_bits"))
    prov = _provenance(exp, settings, quick=quick, seed=seed, per_channel=per_channel,
                       act_bits=act_bits, command=command or _command_line(), qe_s=qe_s,
                       grids=dict(qem_grid=list(qem_grid), vanilla_bits=list(vanilla_bits),
                                  brecq_bits=list(brecq_bits),
                                  brecq_between=list(brecq_between)))
    return _write(exp, prov, Path(out_dir))


class Outcome(NamedTuple):
    """One quantized model scored: top-1 (%), seconds to make it, a note (``None``, or which
    earlier row had the same plan) and the per-image correctness ("0"/"1" per test image)."""

    top1: float
    wall_s: float
    note: str | None
    correct: str


class Experiment:
    """One model with its evaluation images and calibration images: scores plans quantized with
    vanilla round-to-nearest (:meth:`vanilla`) or BRECQ (:meth:`brecq`), runs each distinct
    plan once (:meth:`_memo`; BRECQ runs also on disk with ``cache_dir``), and collects the
    table's rows (:meth:`add`)."""

    def __init__(self, setup: _Setup, *, device: str, verbose: bool, t_start: float,
                 cache_dir: Path | None, brecq_settings: dict[str, Any]) -> None:
        self.setup = setup
        self.model = setup.model.to(device).eval()
        self.device = device
        self.verbose, self.t_start, self.cache_dir = verbose, t_start, cache_dir
        self.brecq_settings = brecq_settings
        self.rows: list[dict[str, Any]] = []
        self.masks: list[str] = []
        self.reports: dict[str, Any] = {}
        self.eval_s = 0.0
        self._seen: dict[tuple, tuple[Outcome, str]] = {}
        self.n_weights = sum(weight_of(m).numel() for _, m in quantizable_layers(self.model))

    def score(self, model: nn.Module, wall_s: float = 0.0) -> Outcome:
        """Top-1 (%) and per-image correctness of ``model`` on the evaluation images."""
        t = time.perf_counter()
        mask = correct_mask(model, self.setup.loader)
        self.eval_s += time.perf_counter() - t
        return Outcome(100.0 * mask.double().mean().item(), wall_s, None,
                       "".join("1" if v else "0" for v in mask.tolist()))

    def _memo(self, key: tuple, label: str, run: Callable[[], Outcome]) -> Outcome:
        """``run()`` the first time ``key`` is seen; afterwards its outcome, noted as the same
        plan as ``label`` of the first run."""
        if key in self._seen:
            out, first = self._seen[key]
            return out._replace(note=f"same plan as {first}")
        out = run()
        self._seen[key] = (out, label)
        return out

    def vanilla(self, plan: BitPlan, label: str) -> Outcome:
        """``plan.apply`` (round-to-nearest) on the unfolded model, scored."""
        def run() -> Outcome:
            t = time.perf_counter()
            qmodel = plan.apply(self.model)
            return self.score(qmodel, time.perf_counter() - t)

        return self._memo(("vanilla", tuple(plan.bits.items())), label, run)

    def brecq(self, plan: BitPlan, act: int | None, label: str) -> Outcome:
        """BRECQ with ``plan`` at activation bits ``act``, scored (read from ``cache_dir`` when
        an identical run was kept there)."""
        def run() -> Outcome:
            disk, spec = self._disk(plan, act)
            if disk is not None and disk.exists():
                hit = json.loads(disk.read_text())
                self.reports[label] = hit["report"]
                return Outcome(hit["top1"], hit["wall_s"], None, hit["correct"])
            t = time.perf_counter()
            qmodel, report = brecq(self.model, self.setup.calib, plan, act_bits=act,
                                   **self.brecq_settings)
            out = self.score(qmodel, time.perf_counter() - t)
            self.reports[label] = report.to_frame().to_dict("records")
            if disk is not None:
                _write_atomic(disk, json.dumps(dict(
                    spec=spec, label=label, top1=out.top1, wall_s=out.wall_s,
                    correct=out.correct, report=self.reports[label]), default=str))
            return out

        return self._memo(("brecq", tuple(plan.bits.items()), act), label, run)

    def _disk(self, plan: BitPlan, act: int | None) -> tuple[Path | None, dict[str, Any]]:
        spec = dict(model=self.setup.model_tag, dataset=self.setup.dataset_tag,
                    bits=dict(plan.bits), act=act,
                    **{k: v for k, v in self.brecq_settings.items() if k != "progress"})
        if self.cache_dir is None:
            return None, spec
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"brecq-{digest}.json", spec

    def add(self, section: str, search: str, quantizer: str, plan: BitPlan | None,
            out: Outcome, *, act: int | None = None, qem: float | None = None,
            search_s: float = 0.0, compare_to: str | None = None,
            matched: str | None = None) -> None:
        """Append one row (its per-image correctness kept apart, in the same order)."""
        self.masks.append(out.correct)
        self.rows.append(dict(
            section=section, search=search, quantizer=quantizer, qem=qem,
            weight_bits=32.0 if plan is None else plan.avg_bits, act_bits=act,
            weight_MB=(4 * self.n_weights if plan is None else plan.size_bytes) / 1e6,
            top1=out.top1, wall_s=out.wall_s + search_s, compare_to=compare_to,
            matched=matched, plan="f32" if plan is None else _plan_desc(plan), note=out.note,
        ))
        if self.verbose:
            r = self.rows[-1]
            print(f"[{time.perf_counter() - self.t_start:6.0f} s] {section:7s} "
                  f"{method_label(search, quantizer):18s} W{r['weight_bits']:.2f} A{act or 32}: "
                  f"top-1 {out.top1:.2f} %, {r['wall_s']:.1f} s"
                  + (f" ({out.note})" if out.note else ""), file=sys.stderr, flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def _nearest_uniform(avg: float, uniforms: dict[int, float]) -> tuple[int, float]:
    b = min(uniforms, key=lambda k: (abs(uniforms[k] - avg), k))
    return b, uniforms[b]


def _vanilla_section(exp: Experiment, table: QETable, vanilla_bits: tuple[int, ...],
                     qem_grid: tuple[float, ...]) -> None:
    """Section ``vanilla``: the MixQuant rule decides every layer, first and last included; one
    row per uniform bit-width and per distinct MixQuant plan, each with its budget plan."""
    uniform = {}
    for b in vanilla_bits:
        plan = _uniform(table, b, {})
        uniform[b] = plan.avg_bits
        exp.add("vanilla", "uniform", "vanilla", plan, exp.vanilla(plan, f"vanilla W{b}"))
    seen = set()
    for qem in qem_grid:
        plan, search_s = _timed(partial(mixquant, table, qem))
        if tuple(plan.bits.items()) in seen:
            continue  # the grid's next QEM gave the same plan: one row per distinct plan
        seen.add(tuple(plan.bits.items()))
        b, ref = _nearest_uniform(plan.avg_bits, uniform)
        exp.add("vanilla", "MixQuant", "vanilla", plan,
                exp.vanilla(plan, f"MixQuant QEM={qem:g}"), qem=qem, search_s=search_s,
                compare_to=f"vanilla W{b}", matched=_matched(plan.avg_bits, ref))
        bplan, search_s = _timed(partial(plan_for_budget, table, avg_bits=plan.avg_bits))
        exp.add("vanilla", "budget", "vanilla", bplan,
                exp.vanilla(bplan, f"budget {plan.avg_bits:.2f} bits"), search_s=search_s,
                compare_to=f"vanilla W{b}", matched=_matched(bplan.avg_bits, ref))


def _brecq_point(exp: Experiment, x: float, table: QETable, table_f: QETable,
                 act_bits: tuple[int | None, ...],
                 mixed_act_bits: tuple[int | None, ...] | None) -> None:
    """Section ``brecq`` rows at the average bit-width of 'first/last 8, every other layer at
    x bits': a uniform plan for integer x, MixQuant and budget plans always, each quantized
    with vanilla RTN (plans from ``table``) and with BRECQ (plans from the folded ``table_f``)."""
    first, last = first_last_layers(table.layers)
    fl8 = {first: 8, last: 8}
    n_weights = table.total_numel
    mid = sum(n for k, n in table.numel.items() if k not in fl8)
    target = (x * mid + 8 * (n_weights - mid)) / n_weights
    uniform = float(x).is_integer()
    ref_v = f"vanilla W{x:g} (first/last 8)" if uniform else f"W{x:g} target ({target:.3f})"
    if uniform:
        uplan_v = _uniform(table, int(x), fl8)
        exp.add("brecq", "uniform", "vanilla", uplan_v, exp.vanilla(uplan_v, ref_v))
    (mplan, qem), search_s = _timed(lambda: _mixquant_at(table, target, fl8))
    exp.add("brecq", "MixQuant", "vanilla", mplan,
            exp.vanilla(mplan, f"MixQuant QEM={qem:g} (first/last 8)"), qem=qem,
            search_s=search_s, compare_to=ref_v, matched=_matched(mplan.avg_bits, target))
    bplan, search_s = _timed(lambda: plan_for_budget(table, avg_bits=target, fixed=fl8))
    exp.add("brecq", "budget", "vanilla", bplan,
            exp.vanilla(bplan, f"budget {target:.3f} bits (first/last 8)"), search_s=search_s,
            compare_to=ref_v, matched=_matched(bplan.avg_bits, target))

    uplan = _uniform(table_f, int(x), fl8) if uniform else None
    (mplan_f, qem_f), msearch_s = _timed(lambda: _mixquant_at(table_f, target, fl8))
    bplan_f, bsearch_s = _timed(lambda: plan_for_budget(table_f, avg_bits=target, fixed=fl8))
    for act in act_bits:
        a = f"A{act}" if act else "A32"
        ref = f"BRECQ W{x:g} {a}" if uniform else f"W{x:g} target ({target:.3f}) {a}"
        if uplan is not None:
            exp.add("brecq", "uniform", "BRECQ", uplan, exp.brecq(uplan, act, ref), act=act)
        if mixed_act_bits is not None and act not in mixed_act_bits:
            continue
        exp.add("brecq", "MixQuant", "BRECQ", mplan_f,
                exp.brecq(mplan_f, act, f"MixQuant+BRECQ QEM={qem_f:g} {a}"), act=act,
                qem=qem_f, search_s=msearch_s, compare_to=ref,
                matched=_matched(mplan_f.avg_bits, target))
        exp.add("brecq", "budget", "BRECQ", bplan_f,
                exp.brecq(bplan_f, act, f"budget+BRECQ {target:.3f} bits {a}"), act=act,
                search_s=bsearch_s, compare_to=ref, matched=_matched(bplan_f.avg_bits, target))


def _provenance(exp: Experiment, settings: dict[str, Any], *, quick: bool, seed: int,
                per_channel: bool, act_bits: tuple[int | None, ...], command: str,
                qe_s: float, grids: dict[str, Any]) -> dict[str, Any]:
    setup, device = exp.setup, exp.device
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = platform.processor() or platform.machine()
    return dict(
        model=setup.model_tag, dataset=setup.dataset_tag, command=command, quick=quick,
        brecq_settings=dict(**{k: v for k, v in settings.items() if k != "mixed_act_bits"},
                            batch_size=exp.brecq_settings["batch_size"], first_last_bits=8,
                            seed=seed, per_channel=per_channel, weight_range="mse",
                            act_bits=list(act_bits),
                            mixed_act_bits=settings.get("mixed_act_bits")),
        eval=setup.eval_desc, calibration=setup.calib_desc, git_commit=_git_commit(),
        torch=torch.__version__, device=device, device_name=device_name,
        threads=torch.get_num_threads(), total_wall_s=time.perf_counter() - exp.t_start,
        qe_table_s=qe_s, eval_s=exp.eval_s, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        **grids,
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write(exp: Experiment, prov: dict[str, Any], out_dir: Path) -> pd.DataFrame:
    """Write ``<dataset>-<model>.csv``, ``.md`` and ``.json``; return the table (with the
    derived ``method`` label as an extra column)."""
    df = pd.DataFrame(exp.rows, columns=COLUMNS)
    df["act_bits"] = df["act_bits"].astype("Int64")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{exp.setup.dataset_tag}-{exp.setup.model_tag}"
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.6g")
    paired = paired_comparisons(df, exp.masks)
    _write_atomic(stem.with_suffix(".md"), _markdown(df, prov, paired))
    _write_atomic(stem.with_suffix(".json"), json.dumps(
        {"provenance": prov, "brecq_reports": exp.reports, "per_image_correct": exp.masks,
         "paired": paired}, indent=2, default=str) + "\n")
    df["method"] = [method_label(s, q) for s, q in zip(df["search"], df["quantizer"],
                                                       strict=True)]
    df.attrs["provenance"] = prov
    df.attrs["paths"] = [str(stem.with_suffix(sfx)) for sfx in (".csv", ".md", ".json")]
    return df


def render_markdown(stem: str | os.PathLike) -> Path:
    """Re-render ``<stem>.md`` from an existing ``<stem>.csv`` and ``<stem>.json``; run nothing.

    The table and provenance are the stored ones; the "Paired comparisons" section is computed
    from the stored per-image correctness (:func:`paired_comparisons`) and also written into
    the JSON as ``paired`` (the JSON is rewritten atomically; its other entries are kept).
    ``stem`` is the path without suffix, e.g. ``results/mnist5k-resnet20-mnist5k``.
    Returns the path of the markdown file.
    """
    stem = Path(stem)
    csv, md, js = (stem.parent / (stem.name + sfx) for sfx in (".csv", ".md", ".json"))
    for f in (csv, js):
        if not f.is_file():
            raise FileNotFoundError(f"render_markdown needs {f} (written by reproduce)")
    df = pd.read_csv(csv)
    df["act_bits"] = df["act_bits"].astype("Int64")
    stored = json.loads(js.read_text())
    masks = stored.get("per_image_correct")
    if not isinstance(masks, list) or len(masks) != len(df):
        raise ValueError(f"{js} must hold per_image_correct with one entry per row of {csv} "
                         f"({len(df)} rows)")
    paired = paired_comparisons(df, masks)
    stored["paired"] = paired
    _write_atomic(md, _markdown(df, stored["provenance"], paired))
    _write_atomic(js, json.dumps(stored, indent=2, default=str) + "\n")
    return md


def _stem(out_dir: str | os.PathLike, model_name: str, dataset: str) -> Path:
    """``<out_dir>/<dataset tag>-<model tag>``, the names reproduce writes under."""
    model_tag = "resnet20-mnist5k" if model_name in MNIST_MODELS else model_name
    if dataset.startswith("imagenet:"):
        dataset_tag = "imagenet"
    elif dataset.startswith("imagenette"):
        dataset_tag = "imagenette"
    else:
        dataset_tag = dataset
    return Path(out_dir) / f"{dataset_tag}-{model_tag}"


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
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of this process (the CLI sets it; the library "
                             "never does)")
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
    parser.add_argument("--render-only", action="store_true",
                        help="re-render <out-dir>/<dataset>-<model>.md (and the JSON's paired "
                             "tests) from the stored .csv and .json; runs nothing")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``reproduce`` from parsed CLI arguments; print the markdown table and the paths.

    ``--threads`` sets torch's thread count for this process: the command line owns it."""
    if getattr(args, "render_only", False):
        path = render_markdown(_stem(args.out_dir, args.model, args.dataset))
        print(path.read_text())
        print(f"wrote {path} (and the paired tests into its .json)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    df = reproduce(
        args.model, args.dataset, quick=args.quick, out_dir=args.out_dir, iters=args.iters,
        n_calib=args.n_calib, act_bits=args.act_bits, seed=args.seed,
        per_channel=args.per_channel, device=args.device,
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
