"""GPTQ on one layer (Frantar et al. 2022, arXiv 2210.17323, Algorithm 1): Hessians and columns.

- :class:`HessianAccumulator`: ``H = 2/N * sum_n x_n x_n^T`` over the ``N`` input vectors a layer
  sees (a ``Linear``: every row of its input; a ``Conv2d``: every ``F.unfold`` patch, one
  Hessian per convolution group), summed in float64.
- :func:`gptq_weight`: a weight matrix ``W`` ``(rows, K)`` quantized column by column in the
  Cholesky form: dead columns (``H_jj = 0``) zeroed, damping ``percdamp * mean(diag H)`` on the
  diagonal, ``U = chol(H^-1)`` upper, columns in blocks of ``block_size`` with the error of each
  column spread over the rest of its block at once and over the later blocks lazily (one matrix
  product per block), optional act-order (columns by decreasing ``H_jj``).

Grids come from :func:`mixquant_lite.quant.choose_qparams` and codes are formed with the
quantizer's own float32 arithmetic (``clamp(round(w * (1/s)) + z, 0, 2^b - 1)``), so
``dequantize_affine(codes, scale, zero_point)`` is exactly the weight GPTQ chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .quant import choose_qparams

__all__ = ["HessianAccumulator", "GridSpec", "gptq_weight", "layer_matrix", "output_error"]


class HessianAccumulator:
    """Accumulates ``H = 2/N * X X^T`` of a ``Linear`` / ``Conv2d``'s inputs.

    ``H`` has shape ``(G, K, K)``, ``G`` = the layer's convolution groups (1 for a ``Linear``),
    ``K`` = its input dimension (``in_features``, or ``in_channels / G * kh * kw``), float64.
    """

    def __init__(self, layer: nn.Module, name: str = "layer") -> None:
        if isinstance(layer, nn.Conv2d):
            if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
                raise NotImplementedError(
                    f"{name}: GPTQ's Hessian needs integer zero padding (F.unfold), got "
                    f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}"
                )
            self.groups = layer.groups
        elif isinstance(layer, nn.Linear):
            self.groups = 1
        else:
            raise TypeError(f"{name}: GPTQ handles Linear and Conv2d, got {type(layer).__name__}")
        self.layer = layer
        k = layer.weight[0].numel()
        self.sum = torch.zeros(self.groups, k, k, dtype=torch.float64, device=layer.weight.device)
        self.n = 0

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The input vectors as ``(G, N, K)`` float32."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return x.reshape(1, -1, x.shape[-1]).float()
        assert isinstance(layer, nn.Conv2d)
        if x.dim() == 3:
            x = x[None]
        pad = cast(tuple[int, ...], layer.padding)  # integer padding, checked in __init__
        cols = F.unfold(x.float(), layer.kernel_size, layer.dilation, pad, layer.stride)
        n, gk, npos = cols.shape  # (N, C_in * kh * kw, L), channel-major: groups are slices
        cols = cols.reshape(n, self.groups, gk // self.groups, npos)
        return cols.permute(1, 0, 3, 2).reshape(self.groups, n * npos, gk // self.groups)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Add one batch of the layer's input ``x`` (as the layer receives it)."""
        v = self._vectors(x.detach())
        self.sum += torch.bmm(v.transpose(1, 2), v).double().to(self.sum.device)
        self.n += v.shape[1]

    def hessian(self) -> torch.Tensor:
        """``H = 2/N X X^T``, ``(G, K, K)`` float64 (zeros before any input)."""
        return self.sum * (2.0 / max(self.n, 1))


def layer_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight ``(C_out, ...)`` as the ``(C_out, K)`` float32 matrix GPTQ works on (a copy)."""
    return w.detach().reshape(w.shape[0], -1).float().clone()


@dataclass(frozen=True)
class GridSpec:
    """How one layer is gridded: ``bits``, ``granularity`` (``"per_tensor"``,
    ``"per_channel"``, ``"per_group"``), ``group_size``, ``static`` (per-group grids from the
    weights before any update, as needed with act-order; otherwise each group's grid is chosen
    when GPTQ reaches its first column, from the error-updated weights) and ``range_method``."""

    bits: int
    granularity: str
    group_size: int | None = None
    static: bool = False
    range_method: str = "minmax"


def _initial_grid(w: torch.Tensor, spec: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps and zero points as ``(rows, G)`` float32 tensors (``G`` = 1 unless per group)."""
    rows = w.shape[0]
    if spec.granularity == "per_group":
        s, z = choose_qparams(w, spec.bits, "per_group", spec.range_method, spec.group_size)
        return s.float(), z.float()
    s, z = choose_qparams(w, spec.bits, spec.granularity, spec.range_method)
    return s.float().expand(rows).reshape(rows, 1).clone(), z.float().expand(rows).reshape(
        rows, 1).clone()


def _column_loop(
    wt: torch.Tensor, u: torch.Tensor, st: torch.Tensor, zt: torch.Tensor, grp: list[int],
    spec: GridSpec, block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The blocked column loop on the transposed weights ``wt`` ``(K, rows)`` (updated in
    place) with ``U`` ``(K, K)`` and grids ``st`` / ``zt`` ``(G, rows)``; column ``j`` uses
    grid ``grp[j]``. Returns the float codes ``(K, rows)`` and the (possibly updated) grids."""
    k = wt.shape[0]
    g = spec.group_size or k
    dynamic = spec.granularity == "per_group" and not spec.static
    qmax = 2**spec.bits - 1
    codes = torch.zeros_like(wt)
    invt = 1.0 / st  # float32 1/s, as the quantizer takes it
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = wt[i1:i2].clone()
        err = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if dynamic and j % g == 0:  # the group's grid from its current (updated) weights
                s_, z_ = choose_qparams(w1[i:i + g].T, spec.bits, "per_channel",
                                        spec.range_method)
                st[j // g], zt[j // g] = s_, z_.float()
                invt[j // g] = 1.0 / st[j // g]
            s, z, inv_s = st[grp[j]], zt[grp[j]], invt[grp[j]]
            col = w1[i]
            q = torch.clamp(torch.round(col * inv_s) + z, 0, qmax)
            codes[j] = q
            ei = (col - (q - z) * s) / u1[i, i]
            w1[i:] -= u1[i, i:, None] * ei[None, :]
            err[i] = ei
        wt[i2:] -= u[i1:i2, i2:].T @ err
    return codes, st, zt


def _inverse_cholesky(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """``U = chol(H^-1)`` upper (float32) of ``H`` damped by ``percdamp * mean(diag H)``;
    factorised in float64.

    Raises:
        ValueError: the damped Hessian is not positive definite.
    """
    k = h.shape[0]
    h = h + percdamp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype, device=h.device)
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError as e:  # torch.linalg.LinAlgError
        raise ValueError(f"the damped Hessian is not positive definite (percdamp={percdamp}); "
                         f"raise percdamp: {e}") from None
    return u.float()


def gptq_weight(
    w: torch.Tensor, h: torch.Tensor, spec: GridSpec, *, block_size: int = 128,
    percdamp: float = 0.01, act_order: bool = False,
    grid: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one matrix ``w`` ``(rows, K)`` against its Hessian ``h`` ``(K, K)``.

    ``grid``: optional fixed ``(scale, zero_point)`` of shape ``(rows, 1)`` used for every
    column instead of choosing it from ``w`` (e.g. one per-tensor grid shared by the
    convolution groups of a layer).

    Returns ``(codes, scale, zero_point)``: ``codes`` ``(rows, K)`` int64 in ``0 .. 2^b - 1``;
    ``scale`` / ``zero_point`` float32 ``(rows, G)`` (``G = K / group_size`` per group, else 1:
    per channel each row its grid, per tensor all rows the same). Dead columns' codes are those
    of 0.

    Raises:
        ValueError: the damped Hessian is not positive definite (raise ``percdamp``).
    """
    w = w.float().clone()
    h = h.to(device=w.device, dtype=torch.float64, copy=True)
    k = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    if grid is not None:
        scale, zp = grid[0].float().reshape(-1, 1).clone(), grid[1].float().reshape(-1, 1).clone()
    else:
        scale, zp = _initial_grid(w, spec)
    g = spec.group_size or k
    perm = (torch.argsort(torch.diag(h), descending=True) if act_order
            else torch.arange(k, device=w.device))
    w, h = w[:, perm], h[perm][:, perm]
    u = _inverse_cholesky(h, percdamp)
    grp = (perm // g).tolist() if spec.granularity == "per_group" else [0] * k
    # Transposed work arrays: column j of W is the contiguous row j (the loop's hot path).
    codes, st, zt = _column_loop(w.T.contiguous(), u, scale.T.contiguous(), zp.T.contiguous(),
                                 grp, spec, block_size)
    inv = torch.argsort(perm)
    codes, scale, zp = codes[inv].T.long(), st.T.contiguous(), zt.T.contiguous()
    return codes, scale, zp


def output_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """Mean over the calibration input vectors of ``||(W - W_hat) x||^2``:
    ``sum_g tr(D_g H_g D_g^T) / 2`` with ``H = 2/N X X^T`` (``(G, K, K)`` or ``(K, K)``)."""
    hessian = hessian[None] if hessian.dim() == 2 else hessian
    n_g = hessian.shape[0]
    d = (w.detach().double() - w_hat.detach().double()).reshape(n_g, w.shape[0] // n_g, -1)
    return float((torch.bmm(d, hessian.double()) * d).sum() / 2)
