"""The report of a ``reproduce`` run: markdown (provenance, table, paired tests), provenance
(config, commit, device, times), and the files ``<stem>.csv``, ``.md``, ``.json``."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..zoo.testbeds import Testbed
from .config import ReproduceConfig
from .paired import paired_comparisons, paired_markdown
from .table import COLUMNS, MATCH_TOL, fmt_cell, method_label

__all__ = ["markdown", "provenance", "write_results", "render_markdown", "write_atomic",
           "git_commit", "command_line"]


def git_commit() -> str:
    """The checkout's commit (with "+ uncommitted changes" when dirty), or why unknown."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(  # a run's own outputs do not make its code dirty
            ["git", "status", "--porcelain", "--", ".", ":(exclude)results",
             ":(exclude)benchmarks/results"], cwd=root, capture_output=True, text=True,
            timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if not sha:
        return "none (no commit yet)" + (", uncommitted changes" if dirty else "")
    return sha + (" + uncommitted changes" if dirty else "")


def command_line() -> str:
    """The command line of this process, as recorded in provenance."""
    prog = Path(sys.argv[0]).name
    if prog in ("__main__.py", "-m"):
        prog = "python -m mixquant_lite.cli"
    return " ".join([prog, *sys.argv[1:]])


def markdown(df: pd.DataFrame, prov: dict[str, Any],
              paired: list[dict[str, Any]] | None = None) -> str:
    """The markdown report: provenance, the table, the reading guide, the paired tests."""
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
        "|" + "|".join("---:" if c in ("qem", "weight_bits", "bits_per_weight", "act_bits",
                                       "weight_MB", "top1", "wall_s") else "---"
                       for c in cols) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt_cell(r[c]) for c in cols) + " |")
    lines += [
        "",
        "Reading the table: compare rows of the same section and activation setting at matched "
        f"average weight bit-width (`matched` = within {MATCH_TOL} bit of `compare_to`). "
        "Section `brecq` keeps the first and last layer at 8 bits for every method; its BRECQ "
        "rows quantize BatchNorm-folded weights (plans from the folded model's QE table), its "
        "vanilla rows the unfolded ones. Section `gptq` quantizes the same kind of plans "
        "(first/last 8, from the folded table) with GPTQ, weights only. `top1` in %, "
        "`weight_MB` = weights only.",
    ]
    lines += paired_markdown(paired or [])
    return "\n".join(lines) + "\n"


def provenance(config: ReproduceConfig, bed: Testbed, *, device: str, brecq_batch_size: int,
               qe_s: float, eval_s: float, total_s: float) -> dict[str, Any]:
    """What ran, where and how long: the config (``config``), the testbed's descriptions, the
    commit, torch version, device and seconds."""
    if device.startswith("cuda"):
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = platform.processor() or platform.machine()
    cfg = config.to_dict()
    return dict(
        model=bed.model_tag, dataset=bed.dataset_tag,
        command=config.command or command_line(), quick=config.quick,
        brecq_settings=dict(iters=config.iters, n_calib=config.n_calib,
                            batch_size=brecq_batch_size, first_last_bits=8, seed=config.seed,
                            per_channel=config.per_channel, weight_range="mse",
                            act_bits=cfg["act_bits"], mixed_act_bits=cfg["mixed_act_bits"]),
        eval=bed.eval_desc, calibration=bed.calib_desc, git_commit=git_commit(),
        torch=torch.__version__, device=device, device_name=device_name,
        threads=torch.get_num_threads(), total_wall_s=total_s, qe_table_s=qe_s, eval_s=eval_s,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), qem_grid=cfg["qem_grid"],
        vanilla_bits=cfg["vanilla_bits"], brecq_bits=cfg["brecq_bits"],
        brecq_between=cfg["brecq_between"], config=cfg,
    )


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(rows: list[dict[str, Any]], masks: list[str], reports: dict[str, Any],
                  prov: dict[str, Any], stem: Path) -> pd.DataFrame:
    """Write ``<stem>.csv``, ``.md`` and ``.json``; return the table (with the derived
    ``method`` label as an extra column, the provenance and the paths in ``attrs``)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["act_bits"] = df["act_bits"].astype("Int64")
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.6g")
    paired = paired_comparisons(df, masks)
    write_atomic(stem.with_suffix(".md"), markdown(df, prov, paired))
    write_atomic(stem.with_suffix(".json"), json.dumps(
        {"provenance": prov, "brecq_reports": reports, "per_image_correct": masks,
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
    write_atomic(md, markdown(df, stored["provenance"], paired))
    write_atomic(js, json.dumps(stored, indent=2, default=str) + "\n")
    return md
