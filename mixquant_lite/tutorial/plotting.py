"""Figure helpers for the notebooks (seaborn style, labelled axes with units).

Every function draws into ``ax`` (or a new figure) and returns the Axes (or, for multi-panel
figures, the Figure), so a notebook cell is one call plus a printed takeaway. Units: QE is a mean
squared weight error, in (weight units)^2; accuracy in %; sizes in KiB; times in seconds.
"""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .results_tables import act_label, with_search_columns

__all__ = [
    "set_style",
    "plot_weight_levels",
    "plot_error_hist",
    "plot_layer_roundoff",
    "plot_qe_vs_bits",
    "plot_qe_heatmap",
    "plot_sensitivity",
    "plot_plans",
    "plot_correlations",
    "plot_pareto",
    "plot_qe_ratios",
    "plot_plan_bits",
    "plot_plan_compare",
    "plot_sweep",
    "plot_runtime",
    "plot_exhaustive",
    "plot_matched",
    "plot_results",
]

QE_LABEL = "QE = mean squared weight error (weight units²)"
_SEARCH_COLOR = {"uniform": "C0", "MixQuant": "C1", "budget": "C2"}
_SEARCH_MARKER = {"uniform": "o", "MixQuant": "s", "budget": "^"}


def set_style(dpi: int = 80) -> None:
    """Seaborn whitegrid theme and a modest figure DPI (keeps committed notebooks small)."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = dpi
    plt.rcParams["savefig.dpi"] = dpi
    plt.rcParams["figure.figsize"] = (6.4, 4.0)


def _ax(ax, figsize=None):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_weight_levels(d: Mapping, ax=None, *, bins: int = 80):
    """Histogram of a layer's weights with its quantization levels as vertical lines.

    ``d`` is the dict of :func:`mixquant_lite.tutorial.widgets.layer_roundoff`.
    """
    ax = _ax(ax)
    sns.histplot(d["weights"], bins=bins, stat="count", ax=ax, color="C0", alpha=0.6)
    for i, lv in enumerate(d["levels"]):
        ax.axvline(lv, color="C3", lw=0.8, alpha=0.8,
                   label="quantization level" if i == 0 else None)
    ax.set_xlabel("weight value (weight units)")
    ax.set_ylabel("number of weights")
    ax.set_title(f"{d['layer']}: {d['bits']}-bit levels (step s = {d['scale']:.2e})"
                 if np.ndim(d["scale"]) == 0 else f"{d['layer']}: {d['bits']}-bit levels")
    ax.legend(loc="upper right")
    return ax


def plot_error_hist(d: Mapping, ax=None, *, bins: int = 60):
    """Histogram (as a density) of the rounding error ``W_hat - W`` against the uniform law.

    The uniform law on ``[-s/2, s/2]`` has density ``1/s``; drawn as a red step.
    """
    ax = _ax(ax)
    s = float(np.mean(d["scale"]))
    sns.histplot(d["error"], bins=bins, stat="density", ax=ax, color="C0", alpha=0.6,
                 label="measured error")
    ax.plot([-s, -s / 2, -s / 2, s / 2, s / 2, s], [0, 0, 1 / s, 1 / s, 0, 0], color="C3", lw=2,
            label="uniform on [-s/2, s/2]")
    ax.set_xlim(-0.8 * s, 0.8 * s)
    ax.set_ylim(0, 1.45 / s)
    ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("rounding error W_hat - W (weight units)")
    ax.set_ylabel("density (1 / weight units)")
    ax.set_title(f"{d['layer']} at {d['bits']} bits")
    ax.legend(loc="upper center", ncol=2, fontsize=9)
    return ax


def plot_layer_roundoff(d: Mapping):
    """Two panels: weights with levels, and the error histogram. Returns the Figure."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plot_weight_levels(d, axes[0])
    plot_error_hist(d, axes[1])
    fig.tight_layout()
    return fig


def plot_qe_vs_bits(df: pd.DataFrame, ax=None):
    """Measured QE (``df.qe``) and the ``s^2/12`` prediction (``df.qe_uniform``) vs ``df.bits``."""
    ax = _ax(ax)
    ax.semilogy(df["bits"], df["qe"], "o-", label="measured QE")
    ax.semilogy(df["bits"], df["qe_uniform"], "s--", label="prediction s²/12")
    ax.set_xlabel("bit-width b (bits)")
    ax.set_ylabel(QE_LABEL)
    ax.legend()
    return ax


def plot_qe_heatmap(table, ax=None):
    """Heatmap of log10 QE: rows are layers, columns bit-widths.

    ``table`` is a QE table (``.layers``, ``.bits``, ``.qe(layer, bits)``) or a wide frame (index
    layer names, columns bit-widths, values QE) as :func:`mixquant_lite.tutorial.qe_matrix` gives.
    """
    from .qe_law import qe_matrix

    frame = table if isinstance(table, pd.DataFrame) else qe_matrix(table)
    ax = _ax(ax, figsize=(7, max(4, 0.28 * len(frame))))
    data = np.log10(frame.astype(float).clip(lower=1e-30))
    sns.heatmap(data, ax=ax, cmap="viridis", annot=False,
                cbar_kws={"label": "log10 QE (log10 of weight units²)"})
    ax.set_xlabel("bit-width b (bits)")
    ax.set_ylabel("layer (forward order)")
    return ax


def plot_sensitivity(df: pd.DataFrame, x: str = "qe", ax=None):
    """Scatter of a QE measure (log scale) against the accuracy drop, one colour per bit-width."""
    ax = _ax(ax)
    d = df.assign(drop_pct=100 * df["drop"], bits=df["bits"].astype(str))
    sns.scatterplot(data=d, x=x, y="drop_pct", hue="bits", style="bits", ax=ax, s=50)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)  # linear below 1 point, log above: one outlier fits
    labels = {"qe": QE_LABEL, "qe_norm": "QE / weight variance (dimensionless)"}
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel("accuracy drop (percentage points, symlog)")
    ax.legend(title="bits")
    return ax


def plot_plans(df: pd.DataFrame, ax=None):
    """Random whole-model plans: total squared weight error (log) vs accuracy, coloured by bits."""
    ax = _ax(ax)
    sc = ax.scatter(df["total_sq_error"], 100 * df["accuracy"], c=df["avg_bits"], cmap="viridis",
                    s=30)
    ax.set_xscale("log")
    ax.set_xlabel("total squared weight error Σ numel·QE (weight units²)")
    ax.set_ylabel("test accuracy (%)")
    plt.colorbar(sc, ax=ax, label="average bit-width (bits)")
    return ax


def plot_correlations(corr: pd.DataFrame, ax=None):
    """Forest plot: Spearman rho with its bootstrap interval, one row per (x, y, subset).

    ``corr`` is :func:`mixquant_lite.tutorial.correlation_table`'s frame.
    """
    ax = _ax(ax, figsize=(7, 0.32 * len(corr) + 1.2))
    labels = [f"{r.x} vs {r.y} ({r.subset})" for r in corr.itertuples()]
    ypos = np.arange(len(corr))[::-1]
    for y, r in zip(ypos, corr.itertuples(), strict=True):
        color = "C0" if r.subset == "all" else "C1"
        ax.errorbar([r.rho], [y], xerr=[[r.rho - r.lo], [r.hi - r.rho]], fmt="o", color=color,
                    capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman rank correlation rho (95% bootstrap interval, dimensionless)")
    return ax


def plot_pareto(curves: Mapping[str, pd.DataFrame], ax=None, *, fp_accuracy: float | None = None):
    """Accuracy vs average bit-width, one line per method (each frame: avg_bits, accuracy)."""
    ax = _ax(ax)
    markers = ["o", "s", "^", "D", "v"]
    for i, (label, df) in enumerate(curves.items()):
        d = df.sort_values("avg_bits")
        ax.plot(d["avg_bits"], 100 * d["accuracy"], marker=markers[i % len(markers)],
                ls="-" if len(d) > 1 else "none", label=label, alpha=0.85)
    if fp_accuracy is not None:
        ax.axhline(100 * fp_accuracy, color="k", ls=":", lw=1, label="f32")
    ax.set_xlabel("average weight bit-width (bits, weighted by weight count)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return ax


def plot_qe_ratios(ratios: pd.DataFrame):
    """Measured ``QE_b / QE_8`` per layer against the ``s^2/12`` prediction. Returns the Figure.

    Left: the ratios on a log scale with the predicted curve. Right: the deviation of each
    layer's ratio from the prediction in % (0 = the law holds exactly), which the log scale hides.
    ``ratios`` is :func:`mixquant_lite.tutorial.qe_ratio_frame`'s frame.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    ax.scatter(ratios["bits"], ratios["ratio"], s=14, alpha=0.6, label="measured, one per layer")
    pred = ratios.drop_duplicates("bits").sort_values("bits")
    ax.plot(pred["bits"], pred["predicted"], "C3--", label="prediction ((2⁸-1)/(2ᵇ-1))²")
    ax.set_yscale("log")
    ax.set_xlabel("bit-width b (bits)")
    ax.set_ylabel("QE_b / QE_8 (dimensionless)")
    ax.legend()
    ax = axes[1]
    d = ratios[ratios["bits"] < ratios["bits"].max()].assign(dev=100 * ratios["rel_dev"])
    sns.stripplot(data=d, x="bits", y="dev", ax=ax, jitter=0.2, alpha=0.7, color="C0")
    ax.axhline(0, color="C3", ls="--", label="prediction")
    ax.set_xlabel("bit-width b (bits)")
    ax.set_ylabel("measured / predicted ratio - 1 (%)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_plan_compare(plans: Mapping[str, Mapping[str, int]], ax=None):
    """Grouped bars: the bit-width of every layer (forward order) under several plans."""
    ax = _ax(ax, figsize=(10, 3.4))
    labels = list(plans)
    names = list(next(iter(plans.values())))
    width = 0.8 / len(labels)
    x = np.arange(len(names))
    for i, label in enumerate(labels):
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, [plans[label][n] for n in names],
               width=width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=75, fontsize=7)
    ax.set_ylabel("weight bit-width (bits)")
    ax.set_xlabel("layer (forward order)")
    ax.legend(fontsize=8)
    return ax


def plot_plan_bits(bits: Mapping[str, int], ax=None, *, title: str | None = None):
    """Bar chart of a plan's bit-width per layer (forward order)."""
    ax = _ax(ax, figsize=(9, 3.2))
    names = list(bits)
    ax.bar(range(len(names)), [bits[n] for n in names], color="C0")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=75, fontsize=7)
    ax.set_ylim(0, 8.5)
    ax.set_ylabel("weight bit-width (bits)")
    ax.set_xlabel("layer")
    if title:
        ax.set_title(title)
    return ax


def plot_sweep(df: pd.DataFrame):
    """QEM sweep: average bits, weight size and accuracy against QEM (log). Returns the Figure."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].semilogx(df["qem"], df["avg_bits"], "o-")
    axes[0].set_ylabel("average bit-width (bits)")
    axes[1].semilogx(df["qem"], df["size_bytes"] / 1024, "o-", color="C1")
    axes[1].set_ylabel("weight storage (KiB)")
    axes[2].semilogx(df["qem"], 100 * df["accuracy"], "o-", color="C2")
    axes[2].set_ylabel("test accuracy (%)")
    for ax in axes:
        ax.set_xlabel("QEM (multiplier of the 8-bit QE, dimensionless)")
    fig.tight_layout()
    return fig


def plot_runtime(df: pd.DataFrame, fit: Mapping[str, float] | None = None, ax=None, *,
                 x: str = "weights", y: str = "table_s", label: str = "QE table (7 bit-widths)",
                 x_scale: float = 1e6, x_label: str = "quantizable weights (millions)"):
    """Time (s) against a size measure (default: weights in millions), with a fitted line.

    ``fit`` is :func:`mixquant_lite.tutorial.linear_fit` of ``df[y]`` on ``df[x]`` (unscaled).
    """
    ax = _ax(ax)
    xs_data = df[x] / x_scale
    ax.plot(xs_data, df[y], "o", label=label)
    if "model" in df:
        for xi, yi, name in zip(xs_data, df[y], df["model"], strict=True):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=8)
    if fit is not None:
        xs = np.linspace(0, float(xs_data.max()) * 1.05, 50)
        ax.plot(xs, fit["slope"] * xs * x_scale + fit["intercept"], "C3--",
                label=f"linear fit, R² = {fit['r2']:.3f}")
    ax.set_xlabel(x_label)
    ax.set_ylabel("wall time (s)")
    ax.legend()
    return ax


def plot_exhaustive(df: pd.DataFrame):
    """Exhaustive search vs MixQuant against the number of layers searched. Returns the Figure.

    Left: plans enumerated (``7^k``) vs QE look-ups (``7k``); right: wall times. Log y scales.
    ``df`` is :func:`mixquant_lite.tutorial.exhaustive_scaling`'s frame.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    panels = (
        ("plans or look-ups evaluated (count)",
         ("exhaustive_plans", "exhaustive: 7^k plans"),
         ("mixquant_lookups", "MixQuant: 7·k look-ups")),
        ("wall time (s)",
         ("exhaustive_s", "exhaustive search"), ("mixquant_s", "MixQuant rule (all layers)")),
    )
    for ax, (ylabel, (col_e, label_e), (col_m, label_m)) in zip(axes, panels, strict=True):
        ax.semilogy(df["layers"], df[col_e], "o-", label=label_e)
        ax.semilogy(df["layers"], df[col_m], "s-", label=label_m)
        ax.set_xlabel("number of layers searched k")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_matched(pairs: pd.DataFrame, ax=None):
    """Mixed minus uniform accuracy at matched average bit-width, one row per pair.

    ``pairs`` is :func:`mixquant_lite.tutorial.matched_comparison`'s frame. Pairs whose mixed
    plan *is* the uniform plan (difference 0 by construction) are left out and counted in the
    title. Right of 0: the mixed plan is more accurate. One test image in 1,000 is 0.1 points.
    """
    d = pairs[~pairs["same_plan"].astype(bool)]
    ax = _ax(ax, figsize=(8, 0.35 * max(len(d), 1) + 1.6))
    ypos = np.arange(len(d))[::-1]
    seen = set()
    for y, p in zip(ypos, d.itertuples(), strict=True):
        color, marker = (_SEARCH_COLOR.get(p.search, "C3"), _SEARCH_MARKER.get(p.search, "D"))
        ax.plot([0, p.delta], [y, y], color=color, lw=2, alpha=0.6)
        ax.scatter([p.delta], [y], color=color, marker=marker, zorder=3, s=40,
                   label=p.search if p.search not in seen else None)
        seen.add(p.search)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{p.search} + {p.quantizer} {p.mixed_bits:.2f} b vs uniform "
                        f"{p.uniform_bits:.2f} b ({p.uniform_top1:.1f}%), {act_label(p.act_bits)}"
                        for p in d.itertuples()], fontsize=8)
    lim = max(1.0, float(d["delta"].abs().max()) * 1.2) if len(d) else 1.0
    ax.set_xlim(-lim, lim)
    if not len(d):
        ax.text(0.5, 0.5, "every matched mixed plan is the uniform plan", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("mixed minus uniform top-1 accuracy (percentage points)")
    ax.set_title(f"{len(d)} pairs with different plans "
                 f"({len(pairs) - len(d)} identical to uniform not shown)", fontsize=10)
    if seen:
        ax.legend(fontsize=8)
    return ax


def plot_results(df: pd.DataFrame, section: str, ax=None, *, act_bits=None):
    """Accuracy (%) vs average weight bit-width for every method of one section of a results
    table (``mixquant-lite reproduce``), at one activation setting (``None``: float).

    Colour and marker = how the bits were chosen (uniform, MixQuant, budget); line and fill = the
    quantizer (dashed, open markers: round-to-nearest "vanilla"; solid, filled: BRECQ).
    """
    ax = _ax(ax)
    df = with_search_columns(df)
    d = df[df["section"] == section]
    d = d[d["act_bits"].isna()] if act_bits is None else d[d["act_bits"] == act_bits]
    groups = d[d["quantizer"] != "FP32"].groupby(["search", "quantizer", "method"], sort=False)
    for (search, quantizer, method), g in groups:
        g = g.sort_values("weight_bits")
        brecq = quantizer.lower() == "brecq"
        ax.plot(g["weight_bits"], g["top1"], marker=_SEARCH_MARKER.get(search, "D"), alpha=0.8,
                color=_SEARCH_COLOR.get(search, "C3"), ls="-" if brecq else "--",
                mfc="none" if not brecq else None, label=method)
    fp = df[df["quantizer"] == "FP32"]
    if len(fp):
        ax.axhline(float(fp["top1"].iloc[0]), color="k", ls=":", lw=1, label="FP32")
    ax.set_xlabel("average weight bit-width (bits)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"section {section!r}, activations {act_label(act_bits)}")
    ax.legend(fontsize=8)
    return ax
