"""Provenance shared by the benchmark scripts (run as ``python benchmarks/X.py``)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """Short commit of the repository, ``" + uncommitted changes"`` when tracked files other
    than the outputs (``results/``, ``benchmarks/results/``) differ, or ``"unknown"`` without
    git: a resumable run rewriting its own outputs does not make its code dirty."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)benchmarks/results"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
