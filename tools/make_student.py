"""Write the student versions of the notebooks: solutions removed, outputs cleared.

One source: the committed notebooks hold the solutions, marked as nbgrader marks them. In a code
cell, every block

    ### BEGIN SOLUTION
    ...the solution...
    ### END SOLUTION

is replaced by ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at the marker's
indentation; in a markdown cell the block becomes ``YOUR ANSWER HERE``. Every output and
execution count is cleared. Cells tagged ``check`` (the cells that say whether an exercise is
right) are kept as they are, so a student run stops exactly at the unsolved exercises.

Usage: ``python tools/make_student.py [NOTEBOOK ...] [--out build/student]`` (default: every
``notebooks/*.ipynb``); ``make student`` runs it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = ["YOUR ANSWER HERE"]
ROOT = Path(__file__).resolve().parents[1]


class MarkerError(ValueError):
    """Unbalanced or nested solution markers."""


def strip_solutions(source: str, cell_type: str, where: str = "cell") -> tuple[str, int]:
    """``source`` with every solution block replaced by the stub; also returns the number of
    blocks. Raises :class:`MarkerError` naming ``where`` for a BEGIN without END (or the
    reverse) or nested blocks."""
    out: list[str] = []
    inside = False
    blocks = 0
    for i, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {i}: nested '{BEGIN}'")
            inside = True
            blocks += 1
            indent = re.match(r"\s*", line).group(0)
            stub = CODE_STUB if cell_type == "code" else MARKDOWN_STUB
            out.extend(indent + s for s in stub)
        elif stripped == END:
            if not inside:
                raise MarkerError(f"{where}, line {i}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: '{BEGIN}' without '{END}'")
    return "\n".join(out), blocks


def student_version(nb: nbformat.NotebookNode, name: str = "notebook"
                    ) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` with solutions stripped and outputs cleared; and the number of
    solution blocks removed."""
    nb = nbformat.from_dict(nb)  # deep copy
    total = 0
    for k, cell in enumerate(nb.cells):
        src, n = strip_solutions(cell.source, cell.cell_type, f"{name} cell {k}")
        cell.source = src
        total += n
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
    return nb, total


def write_student(path: Path, out_dir: Path) -> tuple[Path, int]:
    """Read the notebook at ``path``, write its student version into ``out_dir`` (same file
    name, written to a temporary file first). Returns the path and the number of blocks."""
    nb = nbformat.read(path, as_version=4)
    student, n = student_version(nb, path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / path.name
    tmp = dest.with_suffix(".ipynb.tmp")
    nbformat.write(student, tmp)
    tmp.replace(dest)
    return dest, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path,
                   help="notebooks to convert (default: notebooks/*.ipynb)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "student",
                   help="output folder (default build/student)")
    args = p.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not paths:
        print("no notebooks given or found", file=sys.stderr)
        return 2
    for path in paths:
        if not path.is_file():
            print(f"{path}: no such notebook", file=sys.stderr)
            return 2
        try:
            dest, n = write_student(path, args.out)
        except MarkerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{dest}: {n} solution block(s) removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
