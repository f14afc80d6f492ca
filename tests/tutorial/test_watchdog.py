"""The notebook runner's watchdog: a notebook that hangs fails loudly within its bound."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tools" / "run_notebooks.py"
HANGING = ROOT / "tests" / "fixtures" / "hanging.ipynb"


def run(args, tmp_path, bound):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(RUNNER), str(HANGING), "--out-dir", str(tmp_path),
                        *args], capture_output=True, text=True, env=env, timeout=bound + 120)
    return p, time.monotonic() - t0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child that nobody reaped yet is a zombie, not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kernel_pid(stderr: str) -> int:
    return int(re.search(r"its kernel \(pid (\d+)", stderr).group(1))


def stalled_for(stderr: str) -> int:
    return int(re.search(r"was still running after (\d+) s", stderr).group(1))


@pytest.mark.slow
def test_notebook_bound_kills_a_hung_kernel(tmp_path):
    # the fixture SIGSTOPs its kernel in cell 2: no reply ever comes; no cell bound, 20 s in all
    p, took = run(["--cell-timeout", "0", "--notebook-timeout", "20"], tmp_path, 20)
    assert p.returncode == 124, p.stderr
    assert took < 20 + 30  # the bound plus the runner's own start-up and clean-up
    assert f"HANG in {HANGING}: code cell 2 of 3" in p.stderr
    assert "notebook passed its 20 s bound" in p.stderr
    assert "[hanging.ipynb] cell 1/3" in p.stdout and "cell 3/3" not in p.stdout
    assert not alive(kernel_pid(p.stderr))
    assert not (tmp_path / "hanging.ipynb").exists()  # nothing half-written


@pytest.mark.slow
def test_cell_bound_fires_first(tmp_path):
    p, took = run(["--cell-timeout", "8", "--notebook-timeout", "600"], tmp_path, 8)
    assert p.returncode == 124, p.stderr
    assert 8 <= stalled_for(p.stderr) <= 8 + 6  # killed within its poll interval of the bound
    assert took < 600  # far inside the notebook bound (kernel start-up may take a while)
    assert "code cell 2 of 3" in p.stderr and "made no progress for 8 s" in p.stderr
    assert "state T" in p.stderr  # the watchdog saw the stopped kernel
    assert not alive(kernel_pid(p.stderr))


def test_usage_errors(tmp_path):
    p = subprocess.run([sys.executable, str(RUNNER), str(HANGING)], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "exactly one of --out-dir / --in-place" in p.stderr
    p = subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "missing.ipynb"),
                        "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "notebook not found" in p.stderr
