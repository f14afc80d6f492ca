"""Reproduce the headless hang: live ipywidgets under nbclient, with and without the static mode.

    python benchmarks/widget_hang_repro.py --runs 10

Builds a notebook of 40 ``interact`` cells (a FloatLogSlider and a matplotlib figure each, like
the old widget cells) and executes it ``--runs`` times in fresh kernels through
tools/run_notebooks.py, once per arm:

- ``live``: ``--live-widgets`` (widget comms open; nbclient's Output-widget handling answers on the
  shell channel while it waits there for the cell's reply);
- ``static``: the same notebook with each ``interact`` replaced by a direct call of the function
  (same figure and text, no widget comm), which is what ``MIXQUANT_STATIC_WIDGETS=1`` makes the
  package's widget builders do.

A run whose current cell makes no progress for ``--stall`` seconds is killed by the watchdog and
counted as a hang; the watchdog records the kernel's state (``S`` = sleeping, i.e. idle) and CPU
time. Writes benchmarks/results/widget_hang_repro.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from run_notebooks import HANG, run_one  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
HEAD = ("%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
        "from ipywidgets import FloatLogSlider, interact\n\n"
        "def show(q):\n    plt.figure(figsize=(3, 2))\n    plt.plot(np.arange(10) * q)\n"
        "    plt.show()\n    print(q)\n")


def build(path: Path, live: bool, cells: int = 40) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    body = [new_code_cell(HEAD)]
    for i in range(cells):
        body.append(new_code_cell(
            f"interact(show, q=FloatLogSlider(value={i + 1}, min=0, max=4, step=0.1));" if live
            else f"show({i + 1})"))
    nbformat.write(new_notebook(cells=body, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per arm (>= 1)")
    ap.add_argument("--stall", type=float, default=90.0,
                    help="seconds without progress in one cell that count as a hang (> 0)")
    a = ap.parse_args(argv)
    if a.runs < 1 or a.stall <= 0:
        ap.error("--runs must be >= 1 and --stall > 0")
    runs = []
    with tempfile.TemporaryDirectory(prefix="hang-") as tmp:
        for arm in ("live", "static"):
            nb = Path(tmp) / f"{arm}.ipynb"
            build(nb, live=arm == "live")
            for i in range(a.runs):
                status, took, msg = run_one(nb, Path(tmp) / f"out-{arm}.ipynb",
                                            cell_timeout=a.stall, notebook_timeout=1800,
                                            live_widgets=arm == "live", quiet=True)
                label = {0: "ok", HANG: "hang"}.get(status, "error")
                runs.append({"arm": arm, "run": i + 1, "status": label, "seconds": round(took, 1),
                             **({} if status == 0 else {"message": msg[-600:]})})
                print(f"{arm} run {i + 1}: {label} in {took:.0f} s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {arm: {"runs": sum(r["arm"] == arm for r in runs),
                     "hangs": sum(r["arm"] == arm and r["status"] == "hang" for r in runs),
                     "errors": sum(r["arm"] == arm and r["status"] == "error" for r in runs)}
               for arm in ("live", "static")}
    meta = {"command": "python benchmarks/widget_hang_repro.py " + " ".join(
        sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "stall_s": a.stall}
    (OUT / "widget_hang_repro.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": runs}, indent=1) + "\n")
    lines = ["# Headless hang reproduction: 40 interact cells under nbclient", "",
             f"Command: `{meta['command']}` ({meta['date']}); a run counts as a hang when one "
             f"cell makes no progress for {a.stall:.0f} s (the watchdog kills it).", "",
             "| arm | runs | hangs | errors |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['runs']} | {v['hangs']} | {v['errors']} |" for k, v in summary.items()]
    lines += ["", "Hangs (the watchdog's message: cell, and the kernel's state when killed):"]
    lines += [f"- {r['arm']} run {r['run']}: " + r["message"].split("HANG in ")[-1].split(
        ": ", 1)[-1] for r in runs if r["status"] == "hang"]
    (OUT / "widget_hang_repro.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
