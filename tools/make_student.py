"""Build the nbgrader course from the notebooks: source -> release (solutions, hidden tests and
outputs removed), and copy the released notebooks to ``build/student/``.

One source: the committed notebooks hold the solutions and the hidden tests, marked as nbgrader
marks them. Every exercise is a *solution cell* (``metadata.nbgrader``: ``solution: true``,
``grade: false``, a ``grade_id``) whose answer stands between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; every check after it is an *autograder test cell* (``grade: true``,
``locked: true``, ``points``) whose visible part tests properties of the answer and whose
comparison with the reference stands between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``. :func:`validate` enforces that layout before nbgrader sees it.

The course directory (default ``build/course/``) is a standard nbgrader course: ``source/<nb>/``
(one assignment per notebook, named after the file), ``release/<nb>/`` written by
``nbgrader generate_assignment``, ``nbgrader_config.py`` and the gradebook ``gradebook.db``. A
teacher hands out ``release/``; students' copies go to ``submitted/<student>/<nb>/`` and
``nbgrader autograde <nb>`` grades them (``autograded/``, scores in the gradebook).

Usage: ``python tools/make_student.py [NOTEBOOK ...] [--course build/course]
[--out build/student]`` (default: every ``notebooks/*.ipynb``); ``make assignment`` and
``make student`` run it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
CONFIG = '''c = get_config()  # noqa: F821 (nbgrader's config loader defines it)
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = "sqlite:///" + {db!r}
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ExecutePreprocessor.timeout = {timeout}
c.Execute.timeout = {timeout}
'''


class LayoutError(ValueError):
    """A notebook whose exercise cells nbgrader would reject or grade wrongly."""


def _grader(cell) -> dict:
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def _balanced(lines: list[str], begin: str, end: str, where: str) -> int:
    inside, blocks = False, 0
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s == begin:
            if inside:
                raise LayoutError(f"{where}, line {i}: nested '{begin}'")
            inside, blocks = True, blocks + 1
        elif s == end:
            if not inside:
                raise LayoutError(f"{where}, line {i}: '{end}' without '{begin}'")
            inside = False
    if inside:
        raise LayoutError(f"{where}: '{begin}' without '{end}'")
    return blocks


def validate(nb: nbformat.NotebookNode, name: str = "notebook", *, released: bool = False
             ) -> tuple[int, int, float]:
    """Check the nbgrader layout of ``nb``; return (solution cells, test cells, total points).

    Raises :class:`LayoutError` naming the cell for: solution markers (even their text) in a
    cell that is not a solution cell; hidden-test markers outside a grade cell; unbalanced or
    nested markers; a solution cell without markers; a grade cell without positive ``points``
    or not locked; a missing or repeated ``grade_id``. ``released=True``: a released
    notebook, whose solution cells hold the stub instead of markers (any marker is an error).
    """
    ids: set[str] = set()
    n_sol = n_test = 0
    points = 0.0
    for k, cell in enumerate(nb.cells):
        where = f"{name} cell {k}"
        meta = _grader(cell)
        lines = cell.source.splitlines()
        has_sol_text = any(m in cell.source for m in MARKERS)
        if meta:
            gid = meta.get("grade_id")
            if not gid or gid in ids:
                raise LayoutError(f"{where}: grade_id {gid!r} missing or used twice")
            ids.add(gid)
            if meta.get("schema_version") != 3:
                raise LayoutError(f"{where}: nbgrader schema_version must be 3")
        if has_sol_text and not meta.get("solution"):
            raise LayoutError(f"{where}: solution marker text in a non-solution cell")
        if released and (has_sol_text or any(m in cell.source for m in HIDDEN)):
            raise LayoutError(f"{where}: a released notebook still holds a solution or hidden test")
        if meta.get("solution"):
            if (_balanced(lines, *MARKERS, where) == 0 and cell.cell_type == "code"
                    and not released):
                raise LayoutError(f"{where}: solution cell without '{MARKERS[0]}'")
            n_sol += 1
        if any(m in cell.source for m in HIDDEN):
            if not meta.get("grade"):
                raise LayoutError(f"{where}: hidden tests outside a grade cell")
            _balanced(lines, *HIDDEN, where)
        if meta.get("grade") and not meta.get("solution"):
            if not (meta.get("points", 0) > 0 and meta.get("locked")):
                raise LayoutError(f"{where}: a test cell needs points > 0 and locked: true")
            n_test += 1
            points += float(meta["points"])
    return n_sol, n_test, points


def write_config(course: Path, timeout: int = 1800) -> Path:
    """Write ``course/nbgrader_config.py`` (course root, gradebook, stub, cell timeout in s)."""
    course.mkdir(parents=True, exist_ok=True)
    cfg = course / "nbgrader_config.py"
    cfg.write_text(CONFIG.format(root=str(course.resolve()),
                                 db=str((course / "gradebook.db").resolve()), timeout=timeout))
    return cfg


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` (its config applies); raise with its output on
    failure."""
    # nbgrader runs the `alembic` script of its own environment: put that bin/ first on PATH
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")]))
    r = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed ({r.returncode}):\n"
                           f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def build_course(paths: list[Path], course: Path, timeout: int = 1800) -> list[Path]:
    """Validate each notebook, put it in ``course/source/<stem>/`` and generate its release
    version with ``nbgrader generate_assignment``. Returns the released notebooks."""
    write_config(course, timeout)
    released = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        validate(nb, path.name)
        src = course / "source" / path.stem
        src.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, src / path.name)
        nbgrader(course, "generate_assignment", path.stem, "--force")
        released.append(course / "release" / path.stem / path.name)
    return released


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path,
                   help="notebooks to convert (default: notebooks/*.ipynb)")
    p.add_argument("--course", type=Path, default=ROOT / "build" / "course",
                   help="nbgrader course directory (default build/course)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "student",
                   help="copy of the released notebooks (default build/student)")
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
        released = build_course(paths, args.course)
    except (LayoutError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for rel in released:
        shutil.copyfile(rel, args.out / rel.name)
        n_sol, n_test, pts = validate(nbformat.read(rel, as_version=4), rel.name,
                                      released=True)
        print(f"{rel}: {n_sol} exercise(s), {n_test} test cell(s), {pts:g} point(s)")
    print(f"course: {args.course}  (student copies: {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
