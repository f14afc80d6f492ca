"""Paired comparisons of a results table: every row against its uniform reference and every
MixQuant plan against the budget plan at the same point, each with
:func:`mixquant_lite.stats.paired_compare` on the rows' per-image correctness."""
from __future__ import annotations

import re
from typing import Any

import pandas as pd

from ..stats import TIE, paired_compare
from .table import method_label, search_columns

__all__ = ["paired_comparisons", "paired_markdown", "PAIRED_ALPHA"]

PAIRED_ALPHA = 0.05
_POINT = re.compile(r"W(\d+(?:\.\d+)?)")


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
    df = search_columns(df.reset_index(drop=True))
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


def paired_markdown(paired: list[dict[str, Any]]) -> list[str]:
    """The "Paired comparisons" section of the markdown report (lines; empty without pairs)."""
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


