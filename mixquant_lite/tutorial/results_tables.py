"""Reading and comparing the results tables written by ``mixquant-lite reproduce``."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..reproduce.table import method_label

__all__ = [
    "results_dir",
    "read_results",
    "matched_comparison",
    "act_label",
    "method_label",
    "with_search_columns",
    "summarize_pairs",
    "unpaired_rows",
    "uniform_gap",
    "summarize_gaps",
]


def results_dir() -> os.PathLike:
    """The repository's ``results/`` folder (committed output of ``mixquant-lite reproduce``).

    The package is installed editable from a clone (locally and in Colab), so it sits next to
    ``mixquant_lite/``; ``$MIXQUANT_LITE_RESULTS`` overrides it.
    """
    from pathlib import Path

    env = os.environ.get("MIXQUANT_LITE_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "results"


def read_results(stem: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a results table written by ``mixquant-lite reproduce``: ``<stem>.csv`` and the
    provenance in ``<stem>.json`` (command, settings, git commit, device, times).

    ``stem`` is the path without suffix, e.g. ``results/mnist5k-resnet20-mnist5k``.
    Raises ``FileNotFoundError`` naming the command that writes the files.
    """
    import json
    from pathlib import Path

    stem = Path(stem)
    csv, js = stem.with_suffix(".csv"), stem.with_suffix(".json")
    for p in (csv, js):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; `mixquant-lite reproduce` writes it")
    df = with_search_columns(pd.read_csv(csv))
    if "act_bits" in df:
        df["act_bits"] = df["act_bits"].astype("Int64")
    return df, json.loads(js.read_text())["provenance"]



def with_search_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with all three of ``search``, ``quantizer`` and ``method``: tables written by
    ``reproduce`` store the first two; ones from v0.1 only ``method``, which is split here."""
    df = df.copy()
    if "search" not in df or "quantizer" not in df:
        parts = [str(m).split(" + ", 1) if " + " in str(m) else
                 ["none" if str(m) == "FP32" else "uniform", str(m)] for m in df["method"]]
        df["search"] = [p[0] for p in parts]
        df["quantizer"] = [p[1] for p in parts]
    if "method" not in df:
        df["method"] = [method_label(s, q) for s, q in zip(df["search"], df["quantizer"],
                                                           strict=True)]
    return df


def _same_act(df: pd.DataFrame, act) -> pd.Series:
    return df["act_bits"].isna() if pd.isna(act) else df["act_bits"] == act


def _mixed_with_uniform(df: pd.DataFrame):
    """For every mixed-precision row of ``df``: ``(index, row, search, quantizer, act, uniform)``
    with ``uniform`` the rows of the same section, quantizer and activation setting chosen
    uniformly (possibly empty)."""
    df = with_search_columns(df)
    uniform = df[df["search"] == "uniform"]
    for i, r in df.iterrows():
        if r["search"] in ("uniform", "none"):
            continue
        act = r.get("act_bits")
        u = uniform[(uniform["section"] == r["section"])
                    & (uniform["quantizer"] == r["quantizer"]) & _same_act(uniform, act)]
        yield i, r, str(r["search"]), str(r["quantizer"]), act, u


def matched_comparison(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """Pair every mixed-precision row of a results table with its uniform counterpart.

    For each row of a mixed ``search`` (``MixQuant``, ``budget``), the counterpart is the row of
    the same ``section``, ``quantizer`` and ``act_bits`` with uniform precision and the nearest
    ``weight_bits``. Pairs further apart than ``tol`` bits are dropped (e.g. 2.5-bit targets
    that have no uniform point); a mixed row whose plan is the uniform one is kept and flagged.

    Returns one row per pair: ``section``, ``quantizer``, ``search``, ``act_bits`` (``<NA>``:
    float activations),
    ``uniform_bits``, ``mixed_bits``, ``uniform_top1``, ``mixed_top1``, ``delta`` (mixed minus
    uniform, points) and ``same_plan`` (the two rows hold the same bit-width histogram).
    """
    rows = []
    for _, r, search, quantizer, act, cands in _mixed_with_uniform(df):
        if cands.empty:
            continue
        u = cands.loc[(cands["weight_bits"] - r["weight_bits"]).abs().idxmin()]
        if abs(u["weight_bits"] - r["weight_bits"]) > tol:
            continue
        rows.append(dict(
            section=r["section"], quantizer=quantizer, search=search,
            act_bits=None if pd.isna(act) else int(act),
            uniform_bits=float(u["weight_bits"]), mixed_bits=float(r["weight_bits"]),
            uniform_top1=float(u["top1"]), mixed_top1=float(r["top1"]),
            delta=float(r["top1"] - u["top1"]), same_plan=str(r["plan"]) == str(u["plan"]),
        ))
    out = pd.DataFrame(rows, columns=[
        "section", "quantizer", "search", "act_bits", "uniform_bits", "mixed_bits",
        "uniform_top1", "mixed_top1", "delta", "same_plan"])
    out["act_bits"] = out["act_bits"].astype("Int64")  # <NA> = float activations
    return out


def act_label(act_bits) -> str:
    """``"A8"`` for 8-bit activations, ``"A32"`` for float ones (``None`` / NaN / ``<NA>``)."""
    return "A32" if act_bits is None or pd.isna(act_bits) else f"A{int(act_bits)}"


def summarize_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Tally :func:`matched_comparison` per (quantizer, search).

    Returns one row per (``quantizer``, ``search``): ``pairs``, ``identical`` (the mixed plan is
    the uniform one), ``wins`` / ``losses`` / ``ties`` among the pairs whose plans differ, and
    ``mean_delta`` over those (NaN if none differ), in accuracy points.
    """
    rows = []
    for (quantizer, search), g in pairs.groupby(["quantizer", "search"], sort=False):
        d = g[~g["same_plan"].astype(bool)]
        rows.append(dict(quantizer=quantizer, search=search, pairs=len(g),
                         identical=len(g) - len(d), wins=int((d["delta"] > 0).sum()),
                         losses=int((d["delta"] < 0).sum()), ties=int((d["delta"] == 0).sum()),
                         mean_delta=float(d["delta"].mean()) if len(d) else float("nan")))
    return pd.DataFrame(rows, columns=["quantizer", "search", "pairs", "identical", "wins",
                                       "losses", "ties", "mean_delta"])


def unpaired_rows(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """Mixed-precision rows of a results table with no uniform row within ``tol`` bits (e.g.
    the 2.5-bit targets between uniform points), for comparing the searches with each other."""
    paired = matched_comparison(df, tol)
    keep = []
    for i, r, search, quantizer, act, _ in _mixed_with_uniform(df):
        hit = paired[(paired["section"] == r["section"]) & (paired["quantizer"] == quantizer)
                     & (paired["search"] == search)
                     & (paired["mixed_bits"] == float(r["weight_bits"]))]
        hit = hit[hit["act_bits"].isna()] if pd.isna(act) else hit[hit["act_bits"] == act]
        if hit.empty:
            keep.append(i)
    return df.loc[keep]


def uniform_gap(df: pd.DataFrame, tol: float = 0.1) -> pd.DataFrame:
    """How far each mixed-precision row lies above the uniform-precision curve of its quantizer.

    The uniform curve of a (section, quantizer, activation setting) is the piecewise-linear
    interpolation of its uniform rows' accuracy against average weight bits. A mixed row on an
    integer budget is compared with that uniform point; one between uniform points (a 2.5-bit
    target) with the straight line between its neighbours: what mixing the two uniform
    bit-widths would be expected to give, if nothing were gained by choosing *which* layers get
    more bits. Rows outside the uniform range are dropped.

    Returns: ``section``, ``quantizer``, ``search``, ``act_bits``, ``weight_bits``, ``top1``,
    ``uniform_curve`` (interpolated uniform accuracy at ``weight_bits``), ``gap`` (points) and
    ``between`` (no uniform point within ``tol`` bits).
    """
    rows = []
    for _, r, search, quantizer, act, u in _mixed_with_uniform(df):
        u = u.sort_values("weight_bits")
        x = float(r["weight_bits"])
        if u.empty or not u["weight_bits"].min() - 1e-9 <= x <= u["weight_bits"].max() + 1e-9:
            continue
        curve = float(np.interp(x, u["weight_bits"], u["top1"]))
        rows.append(dict(section=r["section"], quantizer=quantizer, search=search,
                         act_bits=act, weight_bits=x, top1=float(r["top1"]),
                         uniform_curve=curve, gap=float(r["top1"]) - curve,
                         between=bool((u["weight_bits"] - x).abs().min() > tol)))
    out = pd.DataFrame(rows, columns=["section", "quantizer", "search", "act_bits",
                                      "weight_bits", "top1", "uniform_curve", "gap", "between"])
    out["act_bits"] = out["act_bits"].astype("Int64")
    return out


def summarize_gaps(gaps: pd.DataFrame, tol: float = 0.05) -> pd.DataFrame:
    """Tally the rows of :func:`uniform_gap` that lie between uniform points.

    One row per (``quantizer``, ``search``): ``rows``, ``above`` / ``on`` / ``below`` the uniform
    line (``on`` = within ``tol`` points: 1 test image in 1,000 is 0.1 points) and ``mean_gap``.
    """
    g = gaps[gaps["between"].astype(bool)]
    rows = []
    for (quantizer, search), d in g.groupby(["quantizer", "search"], sort=False):
        rows.append(dict(quantizer=quantizer, search=search, rows=len(d),
                         above=int((d["gap"] > tol).sum()), on=int((d["gap"].abs() <= tol).sum()),
                         below=int((d["gap"] < -tol).sum()), mean_gap=float(d["gap"].mean())))
    return pd.DataFrame(rows, columns=["quantizer", "search", "rows", "above", "on", "below",
                                       "mean_gap"])
