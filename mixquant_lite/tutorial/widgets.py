"""The pure functions behind the notebooks' widgets, and the widget builders.

A widget cell only wires controls to a function from here; the function does the work and returns
plain data, so the notebook can call it again with fixed values and ``assert`` on the result.
``ipywidgets`` is imported lazily, inside the builders, so the package works without it.

Live or static. In a front end (JupyterLab, Notebook 7, VS Code, Colab) the builders display real
ipywidgets. When the environment variable ``MIXQUANT_STATIC_WIDGETS`` is ``1`` (set by
``make tutorial``, ``make test``, the soak benchmark and ``tools/run_notebooks.py``: headless
execution, where no front end listens) they open no widget comm at all and display a static
snapshot of the output at the default values plus a one-line note. Reason: a headless executor
that receives widget comm traffic can hang forever (nbclient answers Output-widget messages on the
shell channel while it waits on that channel for the cell's reply; jupyter/nbclient#312,
jupyter/nbconvert#2029 and #2003). See README, "Headless execution".
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..quant import check_bits, choose_qparams, fake_quantize
from .helpers import get_layer

__all__ = [
    "STATIC_ENV",
    "static_widgets",
    "layer_roundoff",
    "qem_view",
    "qem_change_points",
    "RoundoffExplorer",
    "QEMExplorer",
    "roundoff_widget",
    "qem_widget",
]

STATIC_ENV = "MIXQUANT_STATIC_WIDGETS"


def static_widgets() -> bool:
    """True when ``MIXQUANT_STATIC_WIDGETS`` asks for static snapshots instead of live widgets."""
    return os.environ.get(STATIC_ENV, "").strip().lower() in ("1", "true", "yes")


@torch.no_grad()
def layer_roundoff(
    model: nn.Module, layer: str, bits: int, *, per_channel: bool = False
) -> dict:
    """Quantize one layer's weight at ``bits`` and describe the round trip.

    Returns a dict:
        ``layer``, ``bits``, ``numel``;
        ``weights`` / ``dequantized`` / ``error``: flat float64 arrays (``error = W_hat - W``);
        ``levels``: the sorted dequantized values ``(q - z) * s`` for ``q = 0 .. 2^b - 1``
        (per tensor; for ``per_channel=True`` the levels of channel 0);
        ``scale``, ``zero_point`` (per tensor: floats; per channel: arrays);
        ``qe``: ``mean(error^2)``; ``qe_uniform``: the ``s^2 / 12`` prediction (mean over
        channels of ``s_c^2 / 12`` per channel); ``counts``: number of weights on each integer
        code ``0 .. 2^b - 1`` (all channels together); ``levels_used``: how many codes occur.
    """
    bits = check_bits(bits)
    w = get_layer(model, layer).weight.detach().float()
    scale, zp = choose_qparams(w, bits, "per_channel" if per_channel else "per_tensor")
    w_hat = fake_quantize(w, bits, per_channel=per_channel)
    err = (w_hat.double() - w.double()).reshape(-1).numpy()
    s = scale.double().numpy()
    z = zp.numpy().astype(np.int64)
    q = np.arange(2**bits)
    levels = (q - (z if z.ndim == 0 else z[0])) * (s if s.ndim == 0 else s[0])
    pred = float(np.mean(s**2) / 12)
    s_b = s.reshape(-1, *[1] * (w.dim() - 1)) if s.ndim else s
    z_b = z.reshape(-1, *[1] * (w.dim() - 1)) if z.ndim else z
    codes = np.round(w_hat.double().numpy() / s_b) + z_b  # the integers 0 .. 2^b - 1
    counts = np.bincount(codes.astype(np.int64).reshape(-1), minlength=2**bits)
    used = int((counts > 0).sum())
    return dict(
        layer=layer,
        bits=bits,
        numel=int(w.numel()),
        weights=w.reshape(-1).double().numpy(),
        dequantized=w_hat.reshape(-1).double().numpy(),
        error=err,
        levels=levels.astype(float),
        scale=float(s) if s.ndim == 0 else s,
        zero_point=int(z) if z.ndim == 0 else z,
        qe=float(np.mean(err**2)),
        qe_uniform=pred,
        levels_used=used,
        counts=counts,
    )


def qem_view(table, model: nn.Module, loader, qem: float, *, baseline_bits: int = 8) -> dict:
    """MixQuant at one QEM: the plan, its summaries and the accuracy of the quantized model.

    Returns a dict: ``qem``, ``bits`` (``{layer: bits}`` in table order), ``avg_bits``,
    ``size_bytes`` (weights only), ``accuracy`` (round-to-nearest per the plan, evaluated on
    ``loader``; ``None`` when ``loader`` is ``None``) and ``plan`` (the :class:`BitPlan`).
    """
    from ..evaluation import evaluate
    from ..search import mixquant

    plan = mixquant(table, float(qem), baseline_bits=baseline_bits)
    bits = {layer: int(plan.bits[layer]) for layer in table.layers}
    acc = None if loader is None else evaluate(plan.apply(model), loader)
    return dict(qem=float(qem), bits=bits, avg_bits=float(plan.avg_bits),
                size_bytes=float(plan.size_bytes), accuracy=acc, plan=plan)


def qem_change_points(table, *, baseline_bits: int = 8) -> np.ndarray:
    """Every QEM at which the MixQuant plan changes, ascending, starting with ``1.0``.

    The rule gives layer ``l`` the smallest ``b`` with ``QE(l, b) <= QEM * QE(l, baseline)``, so
    the plan is constant in QEM except at the ratios ``QE(l, b) / QE(l, baseline)`` above 1. For
    each ratio where the plan really changes, the returned value is the shortest decimal (at least
    3 significant digits) at or above the ratio at which :func:`mixquant_lite.search.mixquant`
    already gives the new plan and that stays below the next change: a number a student can type
    and get exactly the plan the slider shows. Between two consecutive values the plan is that of
    the left one.

    Returns:
        float64 array, shape ``(n,)``, dimensionless QE multipliers, ascending; ``n - 1`` is the
        number of plan changes.
    """
    from ..search import mixquant

    vals = np.asarray(table.values, dtype=np.float64)
    if baseline_bits not in table.bits:
        raise ValueError(f"baseline_bits must be one of {list(table.bits)}, got {baseline_bits}")
    base = vals[:, list(table.bits).index(baseline_bits)][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.unique(vals / base)
    ratios = ratios[np.isfinite(ratios) & (ratios > 1.0)]
    points = [1.0]
    prev = mixquant(table, 1.0, baseline_bits=baseline_bits).bits
    for r in ratios:
        q = float(r)
        for _ in range(8):  # the product QEM * QE_base may round just below QE(l, b)
            plan = mixquant(table, q, baseline_bits=baseline_bits).bits
            if plan != prev:
                break
            q = float(np.nextafter(q, np.inf))
        else:
            continue  # this ratio changes nothing (another bit-width of the layer wins first)
        points.append(q)
        prev = plan
    short = [1.0]
    for i in range(1, len(points)):
        nxt = points[i + 1] if i + 1 < len(points) else np.inf
        want = mixquant(table, points[i], baseline_bits=baseline_bits).bits
        short.append(_short_decimal(points[i], nxt, lambda v, want=want: mixquant(
            table, v, baseline_bits=baseline_bits).bits == want))
    return np.asarray(short, dtype=np.float64)


def _short_decimal(lo: float, hi: float, ok) -> float:
    """Shortest decimal ``v`` (>= 3 significant digits) with ``lo <= v < hi`` and ``ok(v)``."""
    from decimal import ROUND_CEILING, Decimal

    exp = int(np.floor(np.log10(lo)))
    for digits in range(3, 18):
        v = float(Decimal(lo).quantize(Decimal(1).scaleb(exp - digits + 1),
                                      rounding=ROUND_CEILING))
        if lo <= v < hi and ok(v):
            return v
    return lo


def _show_figure(fig) -> None:
    """Display ``fig`` once (in an Output widget, a cell or a console) and free it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)


def _static_note(what: str) -> None:
    print(f"Static snapshot ({what}). Run this notebook in JupyterLab, Notebook 7, VS Code or "
          f"Colab to move the controls.")


class RoundoffExplorer:
    """Notebook 01's control: a layer and a bit-width -> levels, error histogram and QE.

    ``render(layer, bits)`` draws and prints one state (used by the live widget and by the static
    snapshot); results are cached per ``(layer, bits)``.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, layer: str | None = None,
                 bits: int = 3) -> None:
        self.model = model
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer, got an empty list")
        self.layer = self.layers[0] if layer is None else layer
        if self.layer not in self.layers:
            raise ValueError(f"layer must be one of the {len(self.layers)} layers, got {layer!r}")
        self.bits = check_bits(bits)
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {bits}")
        self._cache: dict[tuple[str, int], dict] = {}
        self.box = None

    def data(self, layer: str, bits: int) -> dict:
        key = (layer, int(bits))
        if key not in self._cache:
            self._cache[key] = layer_roundoff(self.model, layer, int(bits))
        return self._cache[key]

    def text(self, layer: str, bits: int) -> str:
        d = self.data(layer, bits)
        return (f"{layer} at {bits} bits: QE = {d['qe']:.3e} (s^2/12 = {d['qe_uniform']:.3e}), "
                f"{d['levels_used']} of {2**bits} levels used")

    def figure(self, layer: str, bits: int):
        """The two-panel figure; the error histogram's y-axis always holds its tallest bar."""
        from .plotting import plot_layer_roundoff

        d = self.data(layer, bits)
        fig = plot_layer_roundoff(d)
        ax = fig.axes[1]
        tallest = max((p.get_height() for p in ax.patches), default=0.0)
        bottom, top = ax.get_ylim()
        if tallest * 1.15 > top:  # small layers (conv1: 144 weights) have spiky histograms
            ax.set_ylim(bottom, tallest * 1.15)
        return fig

    def render(self, layer: str, bits: int) -> None:
        _show_figure(self.figure(layer, bits))
        print(self.text(layer, bits))

    def show(self):
        """Live widget (or, when :func:`static_widgets`, the static snapshot); returns ``self``."""
        if static_widgets():
            self.render(self.layer, self.bits)
            _static_note(f"layer {self.layer}, {self.bits} bits")
            return self
        from IPython.display import display
        from ipywidgets import HTML, Dropdown, HBox, IntSlider, Output, VBox

        self.dropdown = Dropdown(options=self.layers, value=self.layer, description="layer")
        self.slider = IntSlider(value=self.bits, min=2, max=8, step=1, description="bits",
                                continuous_update=False)
        self.status = HTML()
        self.out = Output()

        def update(_change=None) -> None:
            layer, bits = self.dropdown.value, int(self.slider.value)
            self.status.value = f"computing {layer} at {bits} bits ..."
            with self.out:
                self.out.clear_output(wait=True)
                self.render(layer, bits)
            self.layer, self.bits = layer, bits
            self.status.value = f"showing {layer} at {bits} bits"

        self.dropdown.observe(update, names="value")
        self.slider.observe(update, names="value")
        self.box = VBox([HBox([self.dropdown, self.slider]), self.status, self.out])
        self.box.add_class("mixquant-roundoff")
        update()
        display(self.box)
        return self


class QEMExplorer:
    """Notebook 03's control: a slider over every QEM where the MixQuant plan changes.

    The options are :func:`qem_change_points` of ``table``, so every distinct plan is one step
    away and the value shown is the value used. The default is the change point whose plan is the
    one in force at the requested ``qem`` (the largest point ``<= qem``). Each distinct plan is
    evaluated on ``loader`` once (cache keyed by the plan's bit-widths).
    """

    def __init__(self, table, model: nn.Module, loader, *, qem: float = 300.0,
                 baseline_bits: int = 8) -> None:
        qem = float(qem)
        if not np.isfinite(qem) or qem < 1.0:
            raise ValueError(f"qem must be a finite number >= 1, got {qem}")
        self.table, self.model, self.loader = table, model, loader
        self.baseline_bits = baseline_bits
        self.points = qem_change_points(table, baseline_bits=baseline_bits)
        self.qem = float(self.points[np.searchsorted(self.points, qem, side="right") - 1])
        self._cache: dict[tuple[int, ...], dict] = {}
        self.evaluations = 0
        self.box = None

    @staticmethod
    def label(qem: float) -> str:
        """The text the slider shows for ``qem``: the shortest repr that parses back to it."""
        qem = float(qem)
        if not np.isfinite(qem):
            return "inf"
        return str(int(qem)) if qem == int(qem) else repr(qem)

    def interval(self, qem: float) -> tuple[float, float]:
        """``[lo, hi)``: the QEMs that give the same plan as change point ``qem``."""
        i = int(np.searchsorted(self.points, qem, side="right")) - 1
        hi = float(self.points[i + 1]) if i + 1 < len(self.points) else float("inf")
        return float(self.points[i]), hi

    def view(self, qem: float) -> tuple[dict, bool]:
        """:func:`qem_view` at ``qem``; ``(view, cached)``. Accuracy is reused per plan."""
        from ..search import mixquant

        plan = mixquant(self.table, float(qem), baseline_bits=self.baseline_bits)
        key = tuple(int(plan.bits[n]) for n in self.table.layers)
        if key in self._cache:
            return {**self._cache[key], "qem": float(qem)}, True
        v = qem_view(self.table, self.model, self.loader, qem, baseline_bits=self.baseline_bits)
        self.evaluations += 1
        self._cache[key] = v
        return v, False

    def text(self, qem: float) -> str:
        v, _ = self.view(qem)
        lo, hi = self.interval(qem)
        acc = "not evaluated" if v["accuracy"] is None else f"accuracy {v['accuracy']:.1%}"
        span = (f"QEM >= {self.label(lo)}" if not np.isfinite(hi)
                else f"{self.label(lo)} <= QEM < {self.label(hi)}")
        return (f"QEM {self.label(qem)}: {v['avg_bits']:.2f} average bits, "
                f"{v['size_bytes'] / 1000:.1f} kB of weights, {acc} (same plan for {span})")

    def render(self, qem: float) -> None:
        from .plotting import plot_plan_bits

        v, _ = self.view(qem)
        ax = plot_plan_bits(v["bits"], title=f"MixQuant, QEM = {self.label(qem)}")
        _show_figure(ax.figure)
        print(self.text(qem))

    def show(self):
        """Live widget (or, when :func:`static_widgets`, the static snapshot); returns ``self``."""
        if static_widgets():
            self.render(self.qem)
            _static_note(f"QEM {self.label(self.qem)}; the live slider has {len(self.points)} "
                         f"positions, one per plan")
            return self
        from IPython.display import display
        from ipywidgets import HTML, Layout, Output, SelectionSlider, VBox

        self.slider = SelectionSlider(
            options=[(self.label(q), float(q)) for q in self.points], value=self.qem,
            description="QEM", continuous_update=False, layout=Layout(width="640px"))
        self.status = HTML()
        self.out = Output()

        def update(_change=None) -> None:
            qem = float(self.slider.value)
            self.status.value = (f"computing QEM {self.label(qem)}: evaluating the plan on the "
                                 f"test images ...")
            t0 = time.perf_counter()
            _, cached = self.view(qem)
            with self.out:
                self.out.clear_output(wait=True)
                self.render(qem)
            self.qem = qem
            took = "cached plan" if cached else f"evaluated in {time.perf_counter() - t0:.1f} s"
            self.status.value = f"showing QEM {self.label(qem)} ({took})"

        self.slider.observe(update, names="value")
        self.box = VBox([self.slider, self.status, self.out])
        self.box.add_class("mixquant-qem")
        update()
        display(self.box)
        return self


def roundoff_widget(model: nn.Module, layers: Sequence[str], *, layer: str | None = None,
                    bits: int = 3) -> RoundoffExplorer:
    """Show notebook 01's control (live, or a static snapshot headless); see RoundoffExplorer."""
    return RoundoffExplorer(model, layers, layer=layer, bits=bits).show()


def qem_widget(table, model: nn.Module, loader, *, qem: float = 300.0) -> QEMExplorer:
    """Show notebook 03's QEM control (live, or a static snapshot headless); see QEMExplorer."""
    return QEMExplorer(table, model, loader, qem=qem).show()
