"""Soak: execute every notebook that holds a widget N times headless, each in a fresh kernel.

    python benchmarks/headless_soak.py --runs 20

Each run is ``tools/run_notebooks.py``'s watched execution (nbclient, a fresh kernel, the
package's static widget mode as in ``make tutorial``), with a hard wall-clock bound per run: a run
that does not finish within ``--bound`` seconds is killed and counted as a hang. Writes
``benchmarks/results/headless_soak.json`` and ``.md`` after every run (so an interrupted soak
keeps what it measured). Runs of the notebooks are interleaved (01, 03, 01, 03, ...).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from run_notebooks import HANG, run_one  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
VERSIONS = ("ipykernel", "jupyter_client", "nbclient", "nbconvert", "ipywidgets", "pyzmq",
            "tornado", "torch")


def widget_notebooks() -> list[Path]:
    """Notebooks whose code calls one of the package's widget builders or ipywidgets."""
    found = []
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(p.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        if "_widget(" in code or "ipywidgets" in code:
            found.append(p)
    return found


def code_commit() -> str:
    """The commit under test: ``git rev-parse HEAD``, or ``$SOAK_CODE_COMMIT`` for a snapshot."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("SOAK_CODE_COMMIT", "unknown")


def summarize(runs: list[dict]) -> dict:
    out = {}
    for name in sorted({r["notebook"] for r in runs}):
        rs = [r for r in runs if r["notebook"] == name]
        ok = [r["seconds"] for r in rs if r["status"] == "ok"]
        out[name] = {
            "runs": len(rs), "ok": len(ok),
            "hangs": sum(r["status"] == "hang" for r in rs),
            "errors": sum(r["status"] == "error" for r in rs),
            "median_s": round(statistics.median(ok), 1) if ok else None,
            "min_s": round(min(ok), 1) if ok else None,
            "max_s": round(max(ok), 1) if ok else None,
        }
    return out


def write(runs: list[dict], meta: dict) -> None:
    summary = summarize(runs)
    (OUT / "headless_soak.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": runs}, indent=1) + "\n")
    lines = [
        "# Headless soak: widget notebooks executed repeatedly in fresh kernels",
        "",
        f"Command: `{meta['command']}`. Executor: tools/run_notebooks.py (nbclient, one fresh "
        f"kernel per run, `MIXQUANT_STATIC_WIDGETS=1` as in `make tutorial` / `make test`), hard "
        f"bound {meta['bound_s']:.0f} s per run. Code: commit {meta['code'][:12]}. "
        f"Started {meta['started']}; "
        f"{meta['machine']}; {meta['threads']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        "| notebook | runs | hangs | errors | median s | min s | max s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['runs']} | {s['hangs']} | {s['errors']} | {s['median_s']} "
                     f"| {s['min_s']} | {s['max_s']} |")
    lines += ["", "Per run (seconds, in order): "]
    for name in summary:
        lines.append(f"- {name}: " + ", ".join(
            f"{r['seconds']:.0f}" + ("" if r["status"] == "ok" else f" ({r['status']})")
            for r in runs if r["notebook"] == name))
    lines += ["", "Wall times include kernel start-up and depend on the load of the shared "
              "machine (2 cores shared with other jobs); a hang is a run the watchdog killed."]
    (OUT / "headless_soak.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per notebook (>= 1)")
    ap.add_argument("--bound", type=float, default=600.0,
                    help="seconds after which a run counts as a hang and is killed (> 0)")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every widget notebook")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error(f"--runs must be >= 1, got {a.runs}")
    if a.bound <= 0:
        ap.error(f"--bound must be > 0 seconds, got {a.bound}")
    nbs = [p.resolve() for p in a.notebooks] or widget_notebooks()
    if not nbs:
        ap.error("no notebook with a widget found")
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/headless_soak.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "bound_s": a.bound,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "threads": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "versions": {k: md.version(k) for k in VERSIONS},
        "code": code_commit(),
    }
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for i in range(a.runs):
            for nb in nbs:
                status, took, msg = run_one(nb, Path(tmp) / nb.name, cell_timeout=0,
                                            notebook_timeout=a.bound, quiet=True)
                label = {0: "ok", HANG: "hang"}.get(status, "error")
                runs.append({"notebook": nb.name, "run": i + 1, "status": label,
                             "seconds": round(took, 2),
                             **({} if status == 0 else {"message": msg[-2000:]})})
                print(f"{nb.name} run {i + 1}/{a.runs}: {label} in {took:.1f} s", flush=True)
                write(runs, meta)
    s = summarize(runs)
    return 1 if any(v["hangs"] or v["errors"] for v in s.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
