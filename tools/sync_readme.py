"""Copy the measured tables of ``benchmarks/results/*.md`` into README.md (one source of truth).

README.md holds each block between ``<!-- BEGIN generated: FILE#N -->`` and
``<!-- END generated -->``: the N-th table (0-based) of ``benchmarks/results/FILE`` with the
paragraph just above it. ``python tools/sync_readme.py`` rewrites the blocks;
``--check`` exits 1 when a block differs from its file (``tests/test_readme_sync.py``).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<src>[\w.\-]+)#(?P<n>\d+) -->\n)(?P<body>.*?)"
                   r"(<!-- END generated -->)", re.S)


def table(src: str, n: int) -> str:
    """The ``n``-th markdown table of ``benchmarks/results/src`` with the paragraph above it."""
    path = ROOT / "benchmarks" / "results" / src
    if not path.is_file():
        raise SystemExit(f"sync_readme: {path} does not exist")
    chunks = [c.strip("\n") for c in re.split(r"\n\s*\n", path.read_text())]
    found = [i for i, c in enumerate(chunks) if c.startswith("|")]
    if n >= len(found):
        raise SystemExit(f"sync_readme: {src} has {len(found)} tables, asked for #{n}")
    i = found[n]
    above = chunks[i - 1] if i > 0 and not chunks[i - 1].startswith(("|", "#")) else ""
    return (above + "\n\n" if above else "") + chunks[i] + "\n"


def sync(text: str) -> str:
    """``text`` with every generated block replaced by its file's current table."""
    return BLOCK.sub(lambda m: m.group(1) + table(m["src"], int(m["n"])) + m.group(5), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = ap.parse_args(argv)
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = sync(old)
    if args.check:
        if new != old:
            print("README.md is out of date with benchmarks/results: run tools/sync_readme.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
