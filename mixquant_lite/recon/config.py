"""``BrecqConfig``: every setting of :func:`mixquant_lite.brecq` in one frozen, validated object.

Defaults are the BRECQ recipe (Li et al. 2021, the official code's defaults). Build one and
change fields with :func:`dataclasses.replace` (validated again)::

    cfg = BrecqConfig(iters=2000, n_calib=256, act_bits=8)
    qmodel, report = brecq(model, calib, plan, cfg)
    report.config  # the config that ran
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..quant import RANGE_METHODS, check_bits

__all__ = ["BrecqConfig"]


def _int_at_least(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")


def _positive(name: str, value: Any, *, zero_ok: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (value >= 0 if zero_ok else value > 0) or value != value:
        raise ValueError(f"{name} must be a {'non-negative' if zero_ok else 'positive'} number, "
                         f"got {value!r}")


@dataclass(frozen=True)
class BrecqConfig:
    """Settings of one BRECQ run (validated on construction; raises ``ValueError`` naming the
    field and its accepted range).

    Attributes:
        iters: optimisation steps per unit (recipe 20,000); 0 = round-to-nearest on the grid.
        n_calib: calibration samples used (recipe 1,024); fewer available is an error.
        batch_size: samples per step (recipe 32), at most ``n_calib``.
        seed: seeds the mini-batch sampling (runs on CPU are deterministic).
        act_bits: activation bit-width, or ``None`` for float activations. Every quantized
            layer's input is quantized (per tensor, asymmetric, learned step) except the image.
        first_last_bits: the first and last quantizable layer (module order,
            :func:`mixquant_lite.layers.first_last_layers`) at this bit-width, as in the recipe;
            ``None``: no special first/last layer. With an int ``plan_or_bits`` it sets those two
            layers; a plan must already hold it there (build it with ``fixed=``), otherwise
            :func:`~mixquant_lite.brecq` raises instead of rewriting the plan. With
            ``act_bits`` the first layer's output and the last layer's input use it too.
        per_channel: one grid per output channel; ``None`` takes the plan's ``per_channel``
            (a ``BitPlan``), else per tensor.
        weight_range: ``"mse"`` (recipe) or ``"minmax"`` (the QE table's range).
        fold_batchnorm: fold BatchNorm into the preceding convolutions first (the recipe).
        reg_weight, warmup, beta: regulariser weight (0.01), warm-up fraction without it (0.2),
            its exponent annealed from ``beta[0]`` to ``beta[1]`` (20 -> 2).
        lr, act_lr: Adam learning rates of the rounding variables (1e-3) and activation steps
            (4e-4, cosine-annealed). Far fewer steps than the recipe converge better with a
            larger ``lr``.
        keep_better: per unit, fall back to round-to-nearest if the learned rounding has the
            larger calibration MSE.
        reconstruct_first: with ``first_last_bits``, also reconstruct the first layer when it
            is a unit of its own (the official code never does; it is rounded to nearest).
        progress: a tqdm bar per unit.
    """

    iters: int = 20000
    n_calib: int = 1024
    batch_size: int = 32
    seed: int = 0
    act_bits: int | None = None
    first_last_bits: int | None = 8
    per_channel: bool | None = None
    weight_range: str = "mse"
    fold_batchnorm: bool = True
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    lr: float = 1e-3
    act_lr: float = 4e-4
    keep_better: bool = True
    reconstruct_first: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        _int_at_least("iters", self.iters, 0)
        _int_at_least("n_calib", self.n_calib, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("seed", self.seed, 0)
        if self.batch_size > self.n_calib:
            raise ValueError(f"batch_size={self.batch_size} exceeds n_calib={self.n_calib}")
        if self.act_bits is not None:
            check_bits(self.act_bits, "act_bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "first_last_bits")
        if self.per_channel is not None and not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be True, False or None, got {self.per_channel!r}")
        if self.weight_range not in RANGE_METHODS:
            raise ValueError(
                f"weight_range must be one of {RANGE_METHODS}, got {self.weight_range!r}"
            )
        if not (isinstance(self.warmup, numbers.Real) and 0.0 <= self.warmup < 1.0):
            raise ValueError(f"warmup must be a number in [0, 1), got {self.warmup!r}")
        _positive("reg_weight", self.reg_weight, zero_ok=True)
        _positive("lr", self.lr)
        _positive("act_lr", self.act_lr)
        beta = tuple(self.beta)
        if len(beta) != 2:
            raise ValueError(f"beta must be a pair (start, end), got {self.beta!r}")
        for b in beta:
            _positive("beta", b)
        object.__setattr__(self, "beta", (float(beta[0]), float(beta[1])))
        for name in ("fold_batchnorm", "keep_better", "reconstruct_first", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (``beta`` as a list)."""
        d = asdict(self)
        d["beta"] = list(self.beta)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
