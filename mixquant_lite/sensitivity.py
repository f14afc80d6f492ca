"""Data-aware layer sensitivity beside MixQuant's data-free QE: one table shape, one solver.

Every function here returns a :class:`~mixquant_lite.QETable` with the same layers, bit-widths
and ``numel`` as :func:`~mixquant_lite.qe_table` on the same model, so that
:func:`~mixquant_lite.plan_for_budget` (which minimises ``sum_l cost_matrix()[l, b_l]``) and the
plots take any of them. The ``values`` of a data-aware table are additive per-layer costs of
quantizing that layer at that bit-width, estimated on calibration images ``calib`` of shape
``(N, C, H, W)`` (never the test split):

- ``"qe"``: MixQuant's data-free mean squared weight error (:func:`~mixquant_lite.qe_table`;
  the budget cost is ``numel * QE``).
- ``"hessian"`` (HAWQ-V2/V3, Dong et al. 2020, Yao et al. 2021): ``0.5 * tr(H_l) / numel_l *
  ||W_l - Q_b(W_l)||^2 = 0.5 * tr(H_l) * QE(l, b)``, the second-order loss increase when the
  layer's Hessian block is replaced by its average eigenvalue. ``tr(H_l)`` is the trace of the
  block of the Hessian of the mean cross-entropy over ``calib`` for that layer's weights,
  estimated with Hutchinson's estimator ``E[v^T H v]`` over Rademacher probes ``v``
  (:func:`hessian_trace` reports the probes, their running mean and standard error).
- ``"fisher"``: ``0.5 * sum_i F_ii (w_i - Q_b(w)_i)^2`` with the empirical Fisher diagonal
  ``F_ii = mean_n (d loss_n / d w_i)^2`` (per-image gradients by ``torch.func``), i.e. the
  rounding error of each weight weighted by how much the loss cares about that weight.
- ``"output"`` (AIMET / MQBench style): quantize that one layer alone (all others float) and
  measure the mean KL divergence ``KL(p_float || p_quant)`` of the softmax outputs over
  ``calib``, in nats.

Losses are cross-entropy against ``labels``; when none are given the float model's own
predictions (argmax) are used, as in data-free calibration. Weights are quantized by the
package's quantizer (:func:`~mixquant_lite.fake_quantize`, vanilla asymmetric round-to-nearest,
as :meth:`~mixquant_lite.BitPlan.apply` does). Nothing here changes the caller's model, its
modes, global seeds or thread settings. Two models scored on the same test images are compared
with :func:`mixquant_lite.stats.paired_compare` (exact McNemar test, paired interval).
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import quantizable_layers, weight_name, weight_of
from .quant import fake_quantize
from .table import QETable, qe_table
from .validate import check_int

__all__ = ["MEASURES", "HessianTrace", "hessian", "hessian_trace", "fisher", "output",
           "sensitivity_table", "timed_sensitivity_table"]

MEASURES = ("qe", "hessian", "fisher", "output")
_DEFAULT_BITS = tuple(range(2, 9))


# ------------------------------------------------------------------------------ inputs


def _check_calib(calib: torch.Tensor) -> torch.Tensor:
    if not isinstance(calib, torch.Tensor):
        raise TypeError(f"calib must be a torch.Tensor of images (N, ...), got "
                        f"{type(calib).__name__}")
    if not calib.is_floating_point() or calib.dim() < 2 or calib.shape[0] < 1:
        raise ValueError(
            f"calib must be a float tensor (N, ...) with N >= 1 images, got dtype {calib.dtype} "
            f"and shape {tuple(calib.shape)}"
        )
    if not torch.isfinite(calib).all():
        raise ValueError("calib contains NaN or inf values")
    return calib


def _working_copy(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    """An ``eval()`` deep copy on ``calib``'s device whose weights require grad."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model).eval().to(calib.device)
    if not quantizable_layers(work):
        raise ValueError(f"model {type(model).__name__} has no Conv2d/Linear layers to quantize")
    for p in work.parameters():
        p.requires_grad_(False)
    for _, m in quantizable_layers(work):
        weight_of(m).requires_grad_(True)
    return work


def _labels(work: nn.Module, calib: torch.Tensor, labels, batch_size: int) -> torch.Tensor:
    """Validated ``labels`` (int64 ``(N,)``), or the model's own argmax predictions."""
    if labels is None:
        with torch.no_grad():
            return torch.cat([work(x).argmax(1) for x in calib.split(batch_size)])
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError("labels must be an int64 tensor (N,) of class indices, or None")
    if labels.shape != (calib.shape[0],):
        raise ValueError(
            f"labels must have shape ({calib.shape[0]},) like calib's first axis, "
            f"got {tuple(labels.shape)}"
        )
    return labels.to(calib.device, torch.int64)


def _weight_errors(w: torch.Tensor, bits: tuple[int, ...], per_channel: bool) -> torch.Tensor:
    """``(W - Q_b(W))^2`` for every ``b``: float32 ``(len(bits), *w.shape)``."""
    w = w.detach().float()
    return torch.stack([(w - fake_quantize(w, b, per_channel=per_channel)) ** 2 for b in bits])


# ------------------------------------------------------------------------------ Hessian


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson estimates of each layer's Hessian-block trace.

    Attributes:
        layers: module paths, in module order (as :func:`~mixquant_lite.quantizable_layers`).
        numel: weights per layer, int64 ``(L,)``.
        estimates: float64 ``(n_probes, L)``; row ``k`` holds ``v_k^T (H v_k)`` restricted to
            each layer's weights for Rademacher probe ``v_k`` (loss units per squared weight
            unit; each row is an unbiased estimate of every layer's trace).
        n_images: calibration images the loss was averaged over.
        seed: seed of the probes' generator.
        wall_s: seconds spent.
    """

    layers: tuple[str, ...]
    numel: np.ndarray
    estimates: np.ndarray
    n_images: int
    seed: int
    wall_s: float

    @property
    def n_probes(self) -> int:
        return int(self.estimates.shape[0])

    @property
    def trace(self) -> np.ndarray:
        """Estimated ``tr(H_l)`` per layer, float64 ``(L,)`` (the mean over probes)."""
        return self.estimates.mean(0)

    @property
    def std_error(self) -> np.ndarray:
        """Standard error of :attr:`trace` per layer (sample std over probes / sqrt(probes))."""
        return self.estimates.std(0, ddof=1) / math.sqrt(self.n_probes)

    @property
    def rel_std_error(self) -> np.ndarray:
        """``std_error / |trace|`` per layer (inf where the trace estimate is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.trace != 0, self.std_error / np.abs(self.trace), np.inf)

    def running(self) -> np.ndarray:
        """Running mean after each probe, float64 ``(n_probes, L)`` (the convergence curve)."""
        return np.cumsum(self.estimates, 0) / np.arange(1, self.n_probes + 1)[:, None]


def hessian_trace(
    model: nn.Module,
    calib: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    n_probes: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    per_layer: bool = True,
) -> HessianTrace:
    """Per-layer Hessian traces of the mean cross-entropy over ``calib`` (Hutchinson).

    Each probe ``v`` has independent Rademacher entries on every layer's weights (a generator
    seeded with ``seed``), and ``v_l . (H v)_l`` estimates ``tr(H_ll)`` without bias.

    - ``per_layer=True`` (default, as MQBench's per-layer Hessian and HAWQ's per-block traces):
      ``(H v)_l = H_ll v_l`` is formed for each layer alone (one second backward per layer and
      probe through one retained gradient graph per batch), so the estimate has only the
      layer's own variance ``2 sum_{i != j} H_ij^2``.
    - ``per_layer=False``: one Hessian-vector product of the whole model per probe estimates
      every layer at once; cheaper by about the number of layers, but the cross-layer blocks
      ``v_l^T H_lk v_k`` (mean zero) add their variance, which on a trained network can swamp a
      small block's trace.

    The Hessian is that of the full-batch loss (accumulated over batches of ``batch_size``);
    BatchNorm uses its running statistics (``eval()``).

    Raises:
        TypeError / ValueError: bad ``model``, ``calib``, ``labels``, ``n_probes`` (int >= 2)
            or ``batch_size`` (int >= 1).
    """
    t0 = time.perf_counter()
    calib = _check_calib(calib)
    n_probes = check_int("n_probes", n_probes, 2)
    batch_size = check_int("batch_size", batch_size, 1)
    work = _working_copy(model, calib)
    y = _labels(work, calib, labels, batch_size)
    named = quantizable_layers(work)
    ws = [weight_of(m) for _, m in named]
    gen = torch.Generator().manual_seed(int(seed))
    # probes[i]: (n_probes, *w_i.shape), drawn probe by probe, layer by layer
    draws = [
        [(torch.randint(0, 2, w.shape, generator=gen, dtype=torch.float32) * 2 - 1) for w in ws]
        for _ in range(n_probes)
    ]
    probes = [torch.stack([d[i] for d in draws]).to(w) for i, w in enumerate(ws)]
    del draws
    n = calib.shape[0]
    est = np.zeros((n_probes, len(ws)))
    for xb, yb in zip(calib.split(batch_size), y.split(batch_size), strict=True):
        loss = F.cross_entropy(work(xb), yb, reduction="sum") / n
        grads = torch.autograd.grad(loss, ws, create_graph=True)
        if per_layer:  # H_ll V for all probes at once: a vmap over grad_outputs, per layer
            for i, (g, w, v) in enumerate(zip(grads, ws, probes, strict=True)):
                (hv,) = torch.autograd.grad(g, w, grad_outputs=v, retain_graph=True,
                                            is_grads_batched=True)
                est[:, i] += (v.double() * hv.double()).flatten(1).sum(1).cpu().numpy()
        else:
            for k in range(n_probes):
                dots = [(g * v[k]).sum() for g, v in zip(grads, probes, strict=True)]
                dot = torch.stack(dots).sum()
                hvs = torch.autograd.grad(dot, ws, retain_graph=True)
                est[k] += [float((v[k].double() * h.double()).sum())
                           for v, h in zip(probes, hvs, strict=True)]
    numel = np.array([w.numel() for w in ws], dtype=np.int64)
    return HessianTrace(tuple(name for name, _ in named), numel, est, n, int(seed),
                        time.perf_counter() - t0)


def hessian(
    model: nn.Module, calib: torch.Tensor, bits: Iterable[int] = _DEFAULT_BITS, *,
    labels: torch.Tensor | None = None, per_channel: bool = False, n_probes: int = 32,
    batch_size: int = 128, seed: int = 0, per_layer: bool = True,
    trace: HessianTrace | None = None,
) -> QETable:
    """HAWQ-style table: ``values[l, b] = 0.5 * tr(H_l) * QE(l, b)`` (loss units). Ten
    parameters: the table's and :func:`hessian_trace`'s options, passed through.

    ``tr(H_l)`` comes from :func:`hessian_trace` (or from ``trace`` when given, which must be of
    this model). A negative trace estimate (possible away from a minimum, or from noise) is
    clipped to 0 with a warning: the layer then counts as free to quantize.
    """
    qt = qe_table(model, bits, per_channel=per_channel)
    if trace is None:
        trace = hessian_trace(model, calib, labels=labels, n_probes=n_probes,
                              batch_size=batch_size, seed=seed, per_layer=per_layer)
    elif not isinstance(trace, HessianTrace) or trace.layers != qt.layers:
        raise ValueError("trace must be a HessianTrace of this model (same layers)")
    tr = trace.trace
    if (tr < 0).any():
        bad = [name for name, t in zip(trace.layers, tr, strict=True) if t < 0]
        warnings.warn(
            f"negative Hessian-trace estimates clipped to 0 for {bad} (use more probes or check "
            "that the model is trained)", RuntimeWarning, stacklevel=2,
        )
    values = 0.5 * np.maximum(tr, 0.0)[:, None] * qt.values
    return QETable(qt.layers, qt.bits, dict(qt.numel), values, per_channel, measure="hessian")


# ------------------------------------------------------------------------------ Fisher


def fisher(
    model: nn.Module,
    calib: torch.Tensor,
    bits: Iterable[int] = _DEFAULT_BITS,
    *,
    labels: torch.Tensor | None = None,
    per_channel: bool = False,
    batch_size: int = 32,
) -> QETable:
    """Empirical-Fisher table: ``values[l, b] = 0.5 * sum_i F_ii (w_i - Q_b(w)_i)^2``.

    ``F_ii = mean_n (d CE(model(x_n), y_n) / d w_i)^2`` over the ``N`` calibration images,
    from per-image gradients (``torch.func.vmap`` of ``torch.func.grad``, ``batch_size`` images
    at a time). Units: loss units (nats), like the Hessian table.
    """
    from torch.func import functional_call, grad, vmap

    qt = qe_table(model, bits, per_channel=per_channel)
    calib = _check_calib(calib)
    batch_size = check_int("batch_size", batch_size, 1)
    work = _working_copy(model, calib)
    y = _labels(work, calib, labels, batch_size)
    named = quantizable_layers(work)
    keys = [f"{name}.{weight_name(m)}" for name, m in named]
    weights = {k: weight_of(m).detach() for k, (_, m) in zip(keys, named, strict=True)}
    state = {k: v.detach() for k, v in work.state_dict(keep_vars=True).items()}

    def loss_one(wd: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = functional_call(work, {**state, **wd}, (x.unsqueeze(0),))
        return F.cross_entropy(out, t.unsqueeze(0))

    per_image = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sq = {k: torch.zeros_like(w, dtype=torch.float64) for k, w in weights.items()}
    with torch.no_grad():
        for xb, yb in zip(calib.split(batch_size), y.split(batch_size), strict=True):
            with torch.enable_grad():
                g = per_image(weights, xb, yb)
            for k in keys:
                sq[k] += g[k].double().pow(2).sum(0)
    n = calib.shape[0]
    values = np.empty((len(keys), len(qt.bits)))
    for i, (k, (_, m)) in enumerate(zip(keys, named, strict=True)):
        err = _weight_errors(weight_of(m), qt.bits, per_channel).double()  # (nb, *shape)
        values[i] = 0.5 * (err * (sq[k] / n)).flatten(1).sum(1).cpu().numpy()
    return QETable(qt.layers, qt.bits, dict(qt.numel), values, per_channel, measure="fisher")


# ------------------------------------------------------------------------------ output KL


def output(
    model: nn.Module,
    calib: torch.Tensor,
    bits: Iterable[int] = _DEFAULT_BITS,
    *,
    per_channel: bool = False,
    batch_size: int = 256,
) -> QETable:
    """Output-divergence table: ``values[l, b] = mean_n KL(p_float(x_n) || p_{l@b}(x_n))``.

    ``p_{l@b}`` is the softmax of the model with only layer ``l`` quantized at ``b`` bits (all
    other layers float); nats per image. ``len(layers) * len(bits)`` forward passes over
    ``calib``. Needs no labels.
    """
    qt = qe_table(model, bits, per_channel=per_channel)
    calib = _check_calib(calib)
    batch_size = check_int("batch_size", batch_size, 1)
    work = _working_copy(model, calib)
    named = quantizable_layers(work)
    batches = calib.split(batch_size)
    values = np.empty((len(named), len(qt.bits)))
    with torch.no_grad():
        ref = [F.log_softmax(work(x).double(), 1) for x in batches]
        for i, (_, m) in enumerate(named):
            orig = weight_of(m).detach().clone()
            try:
                for j, b in enumerate(qt.bits):
                    weight_of(m).copy_(fake_quantize(orig, b, per_channel=per_channel))
                    kl = sum(
                        F.kl_div(F.log_softmax(work(x).double(), 1), lp, log_target=True,
                                 reduction="sum").item()
                        for x, lp in zip(batches, ref, strict=True)
                    )
                    values[i, j] = max(kl / calib.shape[0], 0.0)  # KL >= 0; clip -1e-17 noise
            finally:
                weight_of(m).copy_(orig)
    return QETable(qt.layers, qt.bits, dict(qt.numel), values, per_channel, measure="output")


# ------------------------------------------------------------------------------ dispatcher


def sensitivity_table(
    model: nn.Module,
    measure: str,
    calib: torch.Tensor | None = None,
    bits: Iterable[int] = _DEFAULT_BITS,
    *,
    labels: torch.Tensor | None = None,
    per_channel: bool = False,
    **options,
) -> QETable:
    """The table of ``measure`` (one of :data:`MEASURES`) for ``model``.

    ``"qe"`` needs no data (``calib`` is ignored) and returns :func:`~mixquant_lite.qe_table`;
    the others need ``calib`` and pass ``options`` on (``n_probes``, ``batch_size``, ``seed``
    for ``"hessian"``; ``batch_size`` for ``"fisher"`` and ``"output"``).

    Raises:
        ValueError: unknown ``measure`` (the message lists them), missing ``calib``, or an
            option the measure does not take.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if measure == "qe":
        if options:
            raise ValueError(f"measure 'qe' takes no options, got {sorted(options)}")
        return qe_table(model, bits, per_channel=per_channel)
    if calib is None:
        raise ValueError(f"measure {measure!r} needs calibration images: pass calib (N, C, H, W)")
    allowed = {"hessian": {"n_probes", "batch_size", "seed", "per_layer", "trace"},
               "fisher": {"batch_size"}, "output": {"batch_size"}}[measure]
    extra = sorted(set(options) - allowed)
    if extra:
        raise ValueError(f"measure {measure!r} takes options {sorted(allowed)}, got {extra}")
    if measure == "hessian":
        return hessian(model, calib, bits, labels=labels, per_channel=per_channel, **options)
    if measure == "fisher":
        return fisher(model, calib, bits, labels=labels, per_channel=per_channel, **options)
    return output(model, calib, bits, per_channel=per_channel, **options)


def timed_sensitivity_table(*args, **kwargs) -> tuple[QETable, float]:
    """:func:`sensitivity_table` and its wall time in seconds."""
    t0 = time.perf_counter()
    table = sensitivity_table(*args, **kwargs)
    return table, time.perf_counter() - t0
