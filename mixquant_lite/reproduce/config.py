"""The settings of one ``reproduce`` run: a frozen, validated :class:`ReproduceConfig`.

Two presets: :data:`FULL` (the BRECQ recipe: 20,000 steps per block, 1,024 calibration images,
every BRECQ row at every activation setting) and :data:`QUICK` (200 steps, 256 images, the
MixQuant / budget-plan BRECQ rows with float activations only, GPTQ rows at W3 only; fits 15
minutes on 2 CPU cores).
``ReproduceConfig.preset("quick", iters=50)`` is a preset with fields replaced. The config that
ran is recorded in the output JSON (``provenance.config``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ..qspec import QuantSpec
from ..validate import check_choice, check_int, check_int_tuple

__all__ = ["ReproduceConfig", "QUICK", "FULL", "VANILLA_BITS", "BRECQ_BITS", "BRECQ_BETWEEN",
           "GPTQ_BITS", "QEM_GRID"]

VANILLA_BITS = (8, 6, 5, 4, 3, 2)
BRECQ_BITS = (4, 3, 2)
# A mixed target between uniform points, where MixQuant's plan is not a uniform one.
BRECQ_BETWEEN = (2.5,)
GPTQ_BITS = (4, 3, 2)
QEM_GRID = tuple(float(2**k) for k in range(1, 15))  # 2 .. 16384


@dataclass(frozen=True)
class ReproduceConfig:
    """Everything ``reproduce`` needs; validated on construction (``ValueError`` naming the field
    and its accepted range).

    Attributes:
        model, dataset: ``"resnet20-mnist5k"`` / ``"mnist5k"`` (offline default), or a
            torchvision ResNet (``"resnet18"``) with ``"imagenette"``, ``"imagenette-320"`` or
            ``"imagenet:/path/to/val"`` (see :func:`mixquant_lite.zoo.testbeds.testbed`).
        mode: ``"full"`` (the BRECQ recipe) or ``"quick"``; only recorded, the numbers below
            are what runs.
        iters, n_calib: BRECQ steps per block and calibration images.
        act_bits: activation settings of the BRECQ rows (``None`` = float activations).
        mixed_act_bits: activation settings at which the MixQuant / budget-plan BRECQ rows run
            (``None``: all of ``act_bits``).
        vanilla_bits, brecq_bits, qem_grid: the uniform points and the QEMs of the table.
        brecq_between: middle-layer bit-widths between uniform points where MixQuant + BRECQ and
            budget + BRECQ run without a uniform counterpart.
        gptq_bits: middle-layer bit-widths of section ``gptq`` (first/last at 8, like
            ``brecq``): uniform, MixQuant and budget plans quantized with GPTQ (float
            activations; ``()``: no GPTQ rows).
        gptq_granularity, gptq_group_size: the GPTQ rows' grid (``"per_channel"``,
            ``"per_tensor"`` or ``"per_group"`` with ``gptq_group_size`` in 32/64/128; a layer
            no group fits is quantized per channel); their plans' ``spec``.
        seed, per_channel: calibration sample seed; per-output-channel grids for the QE tables,
            vanilla and BRECQ rows.
        device: ``"cpu"``, ``"cuda"``... (``None``: CUDA when available).
        batch_size, workers, image_size: evaluation loader and ImageNet crop size.
        pretrained: ``False`` only for tests (random weights, never for reported numbers).
        progress, verbose: tqdm bars per BRECQ unit; one line per finished row on stderr.
        out_dir: where the CSV, markdown and JSON go.
        command: the command line to record (``None``: ``sys.argv``).
        cache_dir: keep every finished BRECQ run there (resumable runs), or ``None``.
    """

    model: str = "resnet20-mnist5k"
    dataset: str = "mnist5k"
    mode: str = "full"
    iters: int = 20000
    n_calib: int = 1024
    act_bits: tuple[int | None, ...] = (None, 8)
    mixed_act_bits: tuple[int | None, ...] | None = None
    vanilla_bits: tuple[int, ...] = VANILLA_BITS
    brecq_bits: tuple[int, ...] = BRECQ_BITS
    brecq_between: tuple[float, ...] = BRECQ_BETWEEN
    gptq_bits: tuple[int, ...] = GPTQ_BITS
    gptq_granularity: str = "per_channel"
    gptq_group_size: int | None = None
    qem_grid: tuple[float, ...] = QEM_GRID
    seed: int = 0
    per_channel: bool = False
    device: str | None = None
    batch_size: int = 256
    workers: int = 2
    image_size: int = 224
    pretrained: bool = True
    progress: bool = True
    verbose: bool = True
    out_dir: str = "results"
    command: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("quick", "full"))
        check_int("iters", self.iters, 0)
        check_int("n_calib", self.n_calib, 1)
        check_int("seed", self.seed, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("workers", self.workers, 0)
        check_int("image_size", self.image_size, 8)
        for name in ("vanilla_bits", "brecq_bits"):
            object.__setattr__(self, name, check_int_tuple(name, getattr(self, name), 1, 16))
        g = self.gptq_bits
        object.__setattr__(self, "gptq_bits", () if isinstance(g, tuple | list) and not g
                           else check_int_tuple("gptq_bits", g, 1, 16))
        try:
            self.gptq_spec  # noqa: B018  (validates granularity and group size together)
        except ValueError as e:
            raise ValueError(f"gptq_granularity / gptq_group_size: {e}") from None
        object.__setattr__(self, "act_bits", _act_tuple("act_bits", self.act_bits))
        if self.mixed_act_bits is not None:
            object.__setattr__(self, "mixed_act_bits",
                               _act_tuple("mixed_act_bits", self.mixed_act_bits))
        for name in ("brecq_between", "qem_grid"):
            vals = tuple(float(v) for v in getattr(self, name))
            if any(not v > 0 for v in vals):
                raise ValueError(f"{name} must hold positive numbers, got {vals}")
            object.__setattr__(self, name, vals)
        for name in ("out_dir", "cache_dir"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, os.fspath(v))

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def gptq_spec(self) -> QuantSpec:
        """The GPTQ rows' grid (min/max ranges, as the GPTQ reference)."""
        return QuantSpec(self.gptq_granularity, "minmax", self.gptq_group_size)

    @classmethod
    def preset(cls, mode: str = "full", **overrides: Any) -> ReproduceConfig:
        """:data:`QUICK` or :data:`FULL` with ``overrides`` (field names) replaced."""
        base = {"quick": QUICK, "full": FULL}.get(mode)
        if base is None:
            raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-friendly values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def _act_tuple(name: str, vals: Any) -> tuple[int | None, ...]:
    out = tuple(None if v is None else check_int(name, v, 2) for v in vals)
    if not out:
        raise ValueError(f"{name} must hold at least one setting (an int >= 2 or None)")
    return out


FULL = ReproduceConfig()
QUICK = ReproduceConfig(mode="quick", iters=200, n_calib=256, mixed_act_bits=(None,),
                        gptq_bits=(3,))
