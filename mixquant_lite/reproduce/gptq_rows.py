"""Section ``gptq`` of the results table: the plans of section ``brecq`` quantized with GPTQ.

At each middle-layer bit-width ``x`` of ``config.gptq_bits`` (first and last layer at 8 bits,
as in section ``brecq``): the uniform plan, the MixQuant plan and the budget plan at the same
average bit-width, all made from the BatchNorm-folded QE table (the weights GPTQ quantizes)
and given the config's GPTQ grid (``config.gptq_spec``); weights only, float activations.
MixQuant and budget rows name the uniform GPTQ row in ``compare_to``, so the paired tests
(:func:`~mixquant_lite.reproduce.paired.paired_comparisons`) pair them as they pair BRECQ rows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..layers import first_last_layers
from ..plan import BitPlan
from ..search import plan_for_budget
from ..table import QETable
from .config import ReproduceConfig
from .table import matched_label, mixquant_at, uniform_plan

if TYPE_CHECKING:
    from .run import Experiment

__all__ = ["gptq_schedule", "gptq_point", "GPTQ_SEARCHES"]

GPTQ_SEARCHES = ("uniform", "MixQuant", "budget")


def gptq_schedule(config: ReproduceConfig) -> list[tuple[int, tuple[str, ...]]]:
    """The GPTQ runs of ``config``: ``(x, searches)`` per middle-layer bit-width, largest
    first (identical plans run once, so fewer may actually run)."""
    return [(x, GPTQ_SEARCHES) for x in sorted(config.gptq_bits, reverse=True)]


def gptq_point(exp: Experiment, x: int, table_f: QETable, config: ReproduceConfig) -> None:
    """The three GPTQ rows at ``x`` (see the module docstring)."""
    first, last = first_last_layers(table_f.layers)
    fl8 = {first: 8, last: 8}
    mid = sum(n for k, n in table_f.numel.items() if k not in fl8)
    target = (x * mid + 8 * (table_f.total_numel - mid)) / table_f.total_numel
    ref = f"GPTQ W{x} (first/last 8)"
    spec = config.gptq_spec

    def grid(plan: BitPlan) -> BitPlan:
        return plan.with_spec(spec).with_shapes(exp.folded)

    uplan = grid(uniform_plan(table_f, x, fl8))
    exp.add("gptq", "uniform", "GPTQ", uplan, exp.gptq(uplan, ref))
    mplan, qem = mixquant_at(table_f, target, fl8)
    mplan = grid(mplan)
    exp.add("gptq", "MixQuant", "GPTQ", mplan, exp.gptq(mplan, f"MixQuant+GPTQ QEM={qem:g}"),
            qem=qem, compare_to=ref, matched=matched_label(mplan.avg_bits, target))
    bplan = grid(plan_for_budget(table_f, avg_bits=target, fixed=fl8))
    exp.add("gptq", "budget", "GPTQ", bplan, exp.gptq(bplan, f"budget+GPTQ {target:.3f} bits"),
            compare_to=ref, matched=matched_label(bplan.avg_bits, target))
