"""The pure functions behind the notebooks' widgets, and thin ``interact`` builders.

A widget cell only wires controls to a function from here; the function does the work and returns
plain data, so the notebook can call it again with fixed values and ``assert`` on the result (an
``interact`` cell run headless only shows its default). ``ipywidgets`` is imported lazily, inside
the builders, so the package works without it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .analysis import get_layer
from .quant import check_bits, qparams, quantize

__all__ = ["layer_roundoff", "qem_view", "roundoff_widget", "qem_widget"]


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
    scale, zp = qparams(w, bits, per_channel=per_channel)
    w_hat = quantize(w, bits, per_channel=per_channel)
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
    from .evaluate import evaluate
    from .search import mixquant

    plan = mixquant(table, float(qem), baseline_bits=baseline_bits)
    bits = {layer: int(plan.bits[layer]) for layer in table.layers}
    acc = None if loader is None else evaluate(plan.apply(model), loader)
    return dict(qem=float(qem), bits=bits, avg_bits=float(plan.avg_bits),
                size_bytes=float(plan.size_bytes), accuracy=acc, plan=plan)


def roundoff_widget(model: nn.Module, layers: Sequence[str], *, layer: str | None = None,
                    bits: int = 3):
    """``interact``: pick a layer and a bit-width, see the levels, the error and the QE."""
    import matplotlib.pyplot as plt
    from ipywidgets import Dropdown, IntSlider, interact

    from .plotting import plot_layer_roundoff

    def show(layer, bits):
        d = layer_roundoff(model, layer, bits)
        plot_layer_roundoff(d)
        plt.show()
        print(f"{layer} at {bits} bits: QE = {d['qe']:.3e} (s^2/12 = {d['qe_uniform']:.3e}), "
              f"{d['levels_used']} of {2**bits} levels used")

    return interact(show, layer=Dropdown(options=list(layers), value=layer or layers[0]),
                    bits=IntSlider(value=bits, min=2, max=8, step=1))


def qem_widget(table, model: nn.Module, loader, *, qem: float = 100.0):
    """``interact``: a log-scale QEM slider -> per-layer bits, average bits, size and accuracy."""
    import matplotlib.pyplot as plt
    from ipywidgets import FloatLogSlider, interact

    from .plotting import plot_plan_bits

    def show(qem):
        v = qem_view(table, model, loader, qem)
        plot_plan_bits(v["bits"], title=f"MixQuant, QEM = {qem:.3g}")
        plt.show()
        print(f"QEM {qem:.3g}: {v['avg_bits']:.2f} average bits, {v['size_bytes'] / 1024:.1f} KiB "
              f"of weights, accuracy {v['accuracy']:.1%}")

    return interact(show, qem=FloatLogSlider(value=qem, base=10, min=0, max=4, step=0.1))
