"""Before/after of notebook 03's QEM control: which MixQuant plans can a student reach?

    python benchmarks/qem_slider_reach.py

Before: ``FloatLogSlider(min=0, max=4, step=0.1)``, i.e. QEM = 10^(k/10), k = 0..40.
After: ``SelectionSlider`` over :func:`mixquant_lite.tutorial.widgets.qem_change_points` of the
shipped ResNet-20's QE table. Counts the distinct plans each control reaches and lists, for every
plan the old slider cannot reach, the QEM interval where that plan holds. Writes
benchmarks/results/qem_slider_reach.{json,md}. No evaluation on images: plans only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixquant_lite.search import mixquant
from mixquant_lite.table import qe_table
from mixquant_lite.tutorial.widgets import QEMExplorer, qem_change_points
from mixquant_lite.zoo.models import load_pretrained

OUT = Path(__file__).resolve().parent / "results"


def main() -> int:
    table = qe_table(load_pretrained("resnet20-mnist5k"))
    old = [float(10 ** (k / 10)) for k in range(41)]
    new = [float(q) for q in qem_change_points(table)]

    def key(q: float) -> tuple[int, ...]:
        return tuple(mixquant(table, q).bits[n] for n in table.layers)

    def avg(q: float) -> float:
        return round(float(mixquant(table, q).avg_bits), 4)

    plans_new = {key(q): q for q in new}
    plans_old = {key(q) for q in old}
    missed = [q for q in new if key(q) not in plans_old]
    ex = QEMExplorer(table, load_pretrained("resnet20-mnist5k"), None, qem=300.0)
    result = {
        "old_control": "FloatLogSlider(value=300, min=0, max=4, step=0.1)",
        "old_values": [round(q, 3) for q in old],
        "old_distinct_plans": len(plans_old),
        "change_points": new,
        "new_control": "SelectionSlider over qem_change_points(table), continuous_update=False",
        "new_distinct_plans": len(plans_new),
        "all_plans_on_a_fine_grid": len({key(float(q)) for q in np.logspace(0, 5, 20001)}),
        "plans_old_slider_misses": [{"from_qem": q, "to_qem": ex.interval(q)[1],
                                     "avg_bits": avg(q)} for q in missed],
        "default": {"old_shown": round(10 ** 2.5, 1), "old_first_render_at": 300.0,
                    "new_shown_and_used": ex.qem, "plan_equals_qem_300": key(ex.qem) == key(300.0)},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "qem_slider_reach.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Notebook 03's QEM control: plans reachable before and after", "",
        "Command: `python benchmarks/qem_slider_reach.py` (shipped ResNet-20, bits 2..8).",
        "",
        f"- Before: `{result['old_control']}` reaches {len(old)} QEM values "
        f"({', '.join(f'{q:.4g}' for q in old)}) and **{len(plans_old)} distinct plans**.",
        f"- The MixQuant plan changes at {len(new) - 1} QEMs, so there are **{len(new)} plans** "
        f"(a log grid of 20,001 QEMs in [1, 1e5] finds {result['all_plans_on_a_fine_grid']}).",
        f"- After: a SelectionSlider over the change points reaches **{len(plans_new)} of "
        f"{len(new)} plans**; each position is printed as a short decimal that is exactly the "
        "QEM used (a student can type it into `mixquant(table, qem)` and get the same plan).",
        f"- Default: before, the box showed {10 ** 2.5:.0f} while the first plot was computed at "
        f"QEM 300; after, the control shows and uses {ex.label(ex.qem)}, the change point whose "
        f"plan holds at 300 (same plan as 300: {result['default']['plan_equals_qem_300']}).",
        "",
        f"Change points (after): {', '.join(ex.label(q) for q in new)}", "",
        f"The {len(missed)} plans the old slider never showed (QEM interval, average bits):", "",
    ]
    lines += [f"- [{ex.label(m['from_qem'])}, {ex.label(m['to_qem'])}): {m['avg_bits']:.3f} bits"
              for m in result["plans_old_slider_misses"]]
    (OUT / "qem_slider_reach.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
