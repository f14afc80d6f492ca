"""Wall and CPU time of the test suites, with the load the machine was under.

    python benchmarks/test_times.py                 # make test-fast's pytest and `pytest tests`
    python benchmarks/test_times.py --notebooks     # also nbval over notebooks/ (minutes)

Each suite runs in a fresh ``python -m pytest`` child process exactly as the Makefile runs it
(``test-fast``: ``-p no:nbval -m "not slow" tests``; ``unit``: ``tests``; ``notebooks``:
``--nbval-lax --nbval-current-env notebooks/*.ipynb``; ``make test`` is unit + notebooks in one
run). Reports wall seconds, the children's CPU seconds (user + system) and the 1-minute load
average before and after, to ``benchmarks/results/test_times.{json,md}``. A suite's exit status
is recorded; failing tests do not stop the measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

NOTEBOOKS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("notebooks/*.ipynb"))
SUITES = {
    "test-fast": ["-p", "no:nbval", "-m", "not slow", "tests"],
    "unit (pytest tests)": ["tests"],
    "notebooks (nbval)": ["--nbval-lax", "--nbval-current-env", *NOTEBOOKS],
}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_suite(args: list[str]) -> dict:
    load0 = os.getloadavg()[0]
    cpu0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "exit_status": proc.returncode,
            "summary": lines[-1] if lines else "",
            "failed": [ln.split()[1] for ln in lines if ln.startswith("FAILED ")],
            "load_1min_before": round(load0, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", action="store_true", help="also time nbval over notebooks/")
    ap.add_argument("--skip-unit", action="store_true", help="skip the full `pytest tests`")
    args = ap.parse_args(argv)
    names = ["test-fast"] + ([] if args.skip_unit else ["unit (pytest tests)"])
    names += ["notebooks (nbval)"] if args.notebooks else []
    res = {"machine": platform.machine(), "cpu_count": os.cpu_count(),
           "python": platform.python_version(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "suites": {}}
    for name in names:
        res["suites"][name] = run_suite(SUITES[name])
        print(name, res["suites"][name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "test_times.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        f"Test suite times on {res['cpu_count']} CPUs ({res['machine']}, Python {res['python']},"
        f" OMP_NUM_THREADS={res['omp_num_threads']}), each suite in a fresh pytest process "
        "(`python benchmarks/test_times.py`). CPU = user + system seconds of the process; on a "
        "shared machine wall time grows with the load average.",
        "",
        "| suite | wall s | CPU s | 1-min load before -> after | result |",
        "|---|---:|---:|---|---|",
    ]
    for name, r in res["suites"].items():
        lines.append(f"| {name} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                     f"{r['load_1min_before']:.1f} -> {r['load_1min_after']:.1f} | "
                     f"{r['summary']} |")
        lines += [f"|   failed: `{t}` | | | | |" for t in r.get("failed", [])]
    (RESULTS / "test_times.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
