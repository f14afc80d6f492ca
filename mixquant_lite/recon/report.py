"""What :func:`~mixquant_lite.recon.brecq` reports: one :class:`UnitResult` per reconstruction
unit and the :class:`BrecqReport` of the run (its plan and learned integer codes)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..plan import BitPlan
from ..qspec import IntegerWeight
from .config import BrecqConfig

__all__ = ["UnitResult", "BrecqReport"]


@dataclass
class UnitResult:
    """Reconstruction of one unit.

    ``loss_before`` / ``loss_after``: mean squared error per output element of the unit on the
    calibration set (units of the activation squared), round-to-nearest vs learned rounding, both
    with the quantized preceding units feeding it. ``weight_bits``: its layers' bit-widths,
    comma-separated in layer order. ``rounding``: ``"learned"`` (AdaRound), ``"nearest"``
    (``iters=0``) or ``"nearest (fallback)"`` (learned rounding was worse on calibration data).
    ``it_per_s``: optimisation steps per second (NaN for ``iters=0``); ``seconds``: wall time of
    the unit including its input/target capture.
    """

    name: str
    kind: str
    layers: tuple[str, ...]
    weight_bits: str
    act_bits: int | None
    iters: int
    loss_before: float
    loss_after: float
    rounding: str
    it_per_s: float
    seconds: float


@dataclass
class BrecqReport:
    """What :func:`brecq` did: per unit results, the bit-widths used and the settings.

    ``config`` is the :class:`BrecqConfig` that ran; ``settings`` its dict plus the device.
    ``plan`` is the :class:`~mixquant_lite.plan.BitPlan` it quantized with (its ``spec``: the
    granularity and the ``weight_range`` BRECQ used); ``weights`` the learned rounding of every
    layer as integer codes on its grid (:class:`~mixquant_lite.quant.IntegerWeight`, on the
    CPU): ``weights[name].dequantize()`` is that layer's weight in the returned model, bit for
    bit, and :func:`mixquant_lite.export` writes them (``weights=report.weights``).
    """

    units: list[UnitResult]
    bits: dict[str, int]
    numel: dict[str, int]
    act_bits: int | None
    settings: dict[str, Any]
    seconds: float
    not_reconstructed: list[str] = field(default_factory=list)
    config: BrecqConfig | None = None
    plan: BitPlan | None = None
    weights: dict[str, IntegerWeight] = field(default_factory=dict, repr=False)

    @property
    def avg_bits(self) -> float:
        """Average weight bit-width, weighted by each layer's number of weights."""
        total = sum(self.numel.values())
        return sum(self.bits[k] * self.numel[k] for k in self.bits) / total

    @property
    def size_bytes(self) -> float:
        """Weight storage: sum of numel * bits / 8 (biases not counted)."""
        return sum(self.bits[k] * self.numel[k] for k in self.bits) / 8

    def to_frame(self):
        """One row per unit (pandas DataFrame) with the fields of :class:`UnitResult`."""
        import pandas as pd

        rows = [asdict(u) for u in self.units]
        for r in rows:
            r["layers"] = ", ".join(r["layers"])
        frame = pd.DataFrame(rows, columns=list(UnitResult.__dataclass_fields__))
        frame["act_bits"] = frame["act_bits"].astype("Int64")  # None stays <NA>, not NaN
        return frame

    def __str__(self) -> str:
        head = (
            f"BRECQ: {len(self.units)} units, avg weight bits {self.avg_bits:.3f}, "
            f"act bits {self.act_bits}, {self.seconds:.1f} s"
        )
        cols = ["name", "kind", "weight_bits", "act_bits", "loss_before", "loss_after", "rounding",
                "seconds"]
        return head + "\n" + self.to_frame()[cols].to_string(index=False)
