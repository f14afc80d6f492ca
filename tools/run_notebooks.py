#!/usr/bin/env python3
"""Execute notebooks headless, top to bottom in fresh kernels, under a hard wall-clock watchdog.

    python tools/run_notebooks.py notebooks/*.ipynb --out-dir build/notebooks
    python tools/run_notebooks.py notebooks/*.ipynb --in-place --record-commit

Each notebook runs in a child process (nbclient, one fresh kernel) that reports every cell it
starts and finishes on a pipe. This parent process owns the clock: when a cell makes no progress
for ``--cell-timeout`` seconds or a notebook passes ``--notebook-timeout`` seconds, it kills the
child and its kernel (SIGKILL, which works even if the executor or the kernel is stuck in a
network wait or stopped) and fails with a message naming the notebook, the cell number and the
cell's first line. The executor's own timeout is not relied on: with widget comm traffic it can
wait forever (jupyter/nbclient#312, jupyter/nbconvert#1964).

The child sets ``MIXQUANT_STATIC_WIDGETS=1`` (unless ``--live-widgets``): the package's widget
builders then display a static snapshot and open no widget comm (see
mixquant_lite/tutorial/widgets.py).

Outputs are written only when a notebook finishes (atomically: temp file + rename). Exit status:
0 all passed, 1 a cell raised, 2 usage error, 124 the watchdog fired.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC_ENV = "MIXQUANT_STATIC_WIDGETS"  # same name as mixquant_lite.tutorial.widgets.STATIC_ENV
EXECUTED_WITH = ROOT / "notebooks" / "EXECUTED_WITH"
HANG = 124
START_UP_S = 120.0  # seconds the kernel start-up may take before the first cell, at least


def _emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def child(path: Path, output: Path, cell_timeout: int | None) -> int:
    """Run one notebook with nbclient, reporting progress as JSON lines on stdout."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    number = {i: k + 1 for k, i in enumerate(code)}

    def first_line(cell) -> str:
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")]
        return (lines[0] if lines else cell.source.strip()[:60])[:100]

    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=True)

    def on_start(notebook=None, **_):
        prov = getattr(client.km, "provisioner", None)
        pid = getattr(prov, "pid", None) or getattr(getattr(prov, "process", None), "pid", None)
        _emit(event="kernel", pid=pid)

    def on_cell_start(cell=None, cell_index=0, **_):
        if cell.cell_type == "code":
            _emit(event="cell", n=number[cell_index], of=len(code), line=first_line(cell))

    def on_cell_executed(cell=None, cell_index=0, **_):
        _emit(event="cell_done", n=number[cell_index])

    client.on_notebook_start = on_start
    client.on_cell_start = on_cell_start
    client.on_cell_executed = on_cell_executed
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        _emit(event="error", text=str(e)[-3000:])
        return 1
    stamp_run_time(nb, time.perf_counter() - t0)
    nb.metadata.pop("widgets", None)
    tmp = output.with_name(output.name + ".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, output)
    _emit(event="finished")
    return 0


RUN_TIME = re.compile(r"\*\*Run time:\*\* [^·\n]*")


def run_time_text(seconds: float) -> str:
    """The run-time statement the runner writes into a notebook's first cell."""
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return (f"**Run time:** {took} headless, measured by `tools/run_notebooks.py` in the run "
            f"that saved these outputs (kernel start-up included) ")


def stamp_run_time(nb, seconds: float) -> None:
    """Record the measured run time: ``metadata.mixquant.run_time_s`` and, in the first cell,
    the ``**Run time:** ...`` statement (up to the next ``·``), if the cell has one."""
    nb.metadata.setdefault("mixquant", {})["run_time_s"] = round(seconds, 1)
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and RUN_TIME.search(first.source):
        first.source = RUN_TIME.sub(run_time_text(seconds), first.source, count=1)


SERIES = re.compile(r"<!-- SERIES_TIME -->.*?<!-- /SERIES_TIME -->", re.S)


def series_time_text(paths: list[Path]) -> str:
    """The README's series-time sentence, from each notebook's measured run time."""
    import nbformat

    times = {p.stem.split("_")[0]: nbformat.read(p, as_version=4).metadata.get("mixquant", {})
             .get("run_time_s") for p in sorted(paths)}
    if any(t is None for t in times.values()):
        missing = [k for k, t in times.items() if t is None]
        return f"<!-- SERIES_TIME -->(not measured yet: {', '.join(missing)})<!-- /SERIES_TIME -->"
    total = sum(times.values())
    return ("<!-- SERIES_TIME -->" + f"{total / 60:.1f} min in all: " + ", ".join(
        f"{k}: {t:.0f} s" for k, t in times.items()) + "<!-- /SERIES_TIME -->")


def write_series_time(readme: Path = ROOT / "README.md") -> None:
    """Rewrite the ``<!-- SERIES_TIME -->`` block of the README from the notebooks."""
    text = readme.read_text()
    if SERIES.search(text):
        text = SERIES.sub(series_time_text(sorted((ROOT / "notebooks").glob("*.ipynb"))), text)
        readme.write_text(text)


def _proc_state(pid: int | None) -> str:
    """Kernel state at the hang: ``/proc`` run state and CPU seconds used (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return f"state {fields[0]}, {cpu:.1f} CPU s used"
    except (OSError, ValueError, IndexError, TypeError):
        return "state unknown"


def _kill(proc: subprocess.Popen, kernel_pid: int | None) -> None:
    for pid in (kernel_pid, proc.pid):
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait()


def run_one(path: Path, output: Path, *, cell_timeout: float, notebook_timeout: float,
            live_widgets: bool = False, quiet: bool = False) -> tuple[int, float, str]:
    """Run ``path`` in a watched child; returns ``(status, seconds, message)``."""
    env = dict(os.environ)
    if live_widgets:
        env.pop(STATIC_ENV, None)
    else:
        env[STATIC_ENV] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    inner = None if cell_timeout <= 0 else int(cell_timeout) + 60  # the watchdog fires first
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path),
           "--output", str(output), "--cell-timeout", str(inner or 0)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    events: queue.Queue = queue.Queue()
    err_lines: list[str] = []

    def pump_out():
        for line in proc.stdout:
            events.put(line)
        events.put(None)

    def pump_err():
        for line in proc.stderr:
            err_lines.append(line)

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=pump_err, daemon=True).start()
    kernel_pid = None
    cell = {"n": 0, "of": 0, "line": "(kernel start-up)"}

    def stall_bound(c: dict) -> float:  # kernel start-up gets at least START_UP_S
        return cell_timeout if c["n"] else max(cell_timeout, START_UP_S)

    cell_t0 = t0
    error = ""
    name = path.name
    while True:
        now = time.monotonic()
        cell_left = (cell_t0 + stall_bound(cell) - now) if cell_timeout > 0 else float("inf")
        nb_left = t0 + notebook_timeout - now
        wait = max(0.0, min(cell_left, nb_left, 5.0))
        try:
            line = events.get(timeout=wait)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = ev.get("event")
            if kind == "kernel":
                kernel_pid = ev.get("pid")
            elif kind == "cell":
                cell, cell_t0 = ev, time.monotonic()
                if not quiet:
                    print(f"[{name}] cell {ev['n']}/{ev['of']}: {ev['line']}", flush=True)
            elif kind == "error":
                error = ev["text"]
            continue
        now = time.monotonic()
        if now >= t0 + notebook_timeout or (cell_timeout > 0
                                            and now >= cell_t0 + stall_bound(cell)):
            state = _proc_state(kernel_pid)
            _kill(proc, kernel_pid)
            what = (f"the notebook passed its {notebook_timeout:.0f} s bound"
                    if now >= t0 + notebook_timeout else
                    f"the cell made no progress for {stall_bound(cell):.0f} s")
            msg = (f"HANG in {path}: code cell {cell['n']} of {cell['of']} ({cell['line']!r}) "
                   f"was still running after {now - cell_t0:.0f} s; {what}. Killed the executor "
                   f"(pid {proc.pid}) and its kernel (pid {kernel_pid}; {state}).")
            return HANG, now - t0, msg
    rc = proc.wait()
    took = time.monotonic() - t0
    if rc == 0:
        return 0, took, f"{path}: {cell['of']} code cells in {took:.1f} s"
    tail = error or "".join(err_lines[-30:])
    return 1, took, (f"FAILED {path}: code cell {cell['n']} of {cell['of']} ({cell['line']!r}), "
                     f"exit {rc}\n{tail}")


def record_commit() -> str:
    """Write the commit of the package code to notebooks/EXECUTED_WITH (refuse if it is dirty)."""
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "mixquant_lite", "pyproject.toml"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        raise SystemExit("--record-commit: commit the package code first; uncommitted changes in\n"
                         + dirty)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    EXECUTED_WITH.write_text(
        f"{head}\n# The commit of the package code (mixquant_lite/, pyproject.toml) that produced "
        f"the outputs saved in notebooks/*.ipynb.\n# Written by tools/run_notebooks.py "
        f"--record-commit; the Colab set-up cell checks this commit out.\n")
    return head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--out-dir", type=Path, help="write executed copies here")
    ap.add_argument("--in-place", action="store_true", help="overwrite the notebooks")
    ap.add_argument("--cell-timeout", type=float, default=900.0,
                    help="seconds a cell may run without finishing (<= 0: no bound)")
    ap.add_argument("--notebook-timeout", type=float, default=1800.0,
                    help="hard wall-clock bound per notebook, kernel start-up included")
    ap.add_argument("--live-widgets", action="store_true",
                    help=f"do not set {STATIC_ENV}=1 (widgets open comms; may hang headless)")
    ap.add_argument("--record-commit", action="store_true",
                    help="with --in-place: write the package commit to notebooks/EXECUTED_WITH")
    ap.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.output, a.cell_timeout or None)
    if not a.notebooks or a.in_place == bool(a.out_dir):
        ap.error("give notebooks and exactly one of --out-dir / --in-place")
    if a.notebook_timeout <= 0:
        ap.error(f"--notebook-timeout must be > 0 seconds, got {a.notebook_timeout}")
    if a.record_commit and not a.in_place:
        ap.error("--record-commit needs --in-place")
    if a.out_dir:
        a.out_dir.mkdir(parents=True, exist_ok=True)
    for nb in a.notebooks:
        if not nb.is_file():
            ap.error(f"notebook not found: {nb}")
    for nb in a.notebooks:
        out = nb if a.in_place else a.out_dir / nb.name
        status, took, msg = run_one(nb.resolve(), out.resolve(), cell_timeout=a.cell_timeout,
                                    notebook_timeout=a.notebook_timeout,
                                    live_widgets=a.live_widgets, quiet=a.quiet)
        print(msg, file=sys.stderr if status else sys.stdout, flush=True)
        if status:
            return status
    if a.in_place:
        write_series_time()
    if a.record_commit:
        print(f"notebooks/EXECUTED_WITH <- {record_commit()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
