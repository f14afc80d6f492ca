"""The real nbgrader, end to end, over every notebook of the course.

``tools/make_student.py`` builds the course (``nbgrader generate_assignment`` per notebook), then
``nbgrader autograde`` grades three kinds of submission:

(a) the solution notebooks (the committed ones): full marks;
(b) the released student notebooks, untouched: zero marks, and no error anywhere except the
    exercises left undone (``NotImplementedError`` from the stub, or a test cell that names a
    variable only the missing solution would define);
(c) notebook 01 with one deliberately wrong answer that passes the visible check: that exercise's
    points lost (the hidden test catches it), every other point kept.

Autograding executes every notebook in full, twice (solution and student), plus notebook 01 once
more: measured 794 s wall on the 2-core machine at load about 2 (02: 135-153 s per run, 05:
about 90 s) and 39 min at load 8-9. Marked ``slow``: ``make test`` runs it, ``make test-fast``
does not.
"""
from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import make_student  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WRONG_NB = "01_roundoff_error"
WRONG_OLD = "    return ((2 ** (b + 1) - 1) / (2**b - 1)) ** 2\n"
WRONG_NEW = "    return 4 + 1 / b  # wrong, but > 1 and shrinking: passes the visible check\n"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    os.environ.setdefault("MIXQUANT_STATIC_WIDGETS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    root = tmp_path_factory.mktemp("course")
    # the notebooks write their findings into results/: grade against a copy, not the repository
    shutil.copytree(ROOT / "results", root / "results-copy")
    os.environ["MIXQUANT_LITE_RESULTS"] = str(root / "results-copy")
    make_student.build_course(NOTEBOOKS, root, timeout=1800)
    return root


def submit_and_grade(course: Path, student: str, nb: nbformat.NotebookNode, stem: str):
    """Put ``nb`` in ``submitted/<student>/<stem>/``, autograde it; return (score, max score,
    {grade_id: score}, autograded notebook)."""
    from nbgrader.api import Gradebook

    dest = course / "submitted" / student / stem
    dest.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest / f"{stem}.ipynb")
    make_student.nbgrader(course, "autograde", stem, "--student", student, "--force")
    graded = nbformat.read(course / "autograded" / student / stem / f"{stem}.ipynb", as_version=4)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook(stem, stem, student)
        per_cell = {g.name: g.score for g in sub.grades}
        return sub.score, sub.max_score, per_cell, graded


def solution_names(nb: nbformat.NotebookNode) -> set[str]:
    """Names assigned or defined inside the solution regions of ``nb``."""
    names: set[str] = set()
    for cell in nb.cells:
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        src = cell.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.FunctionDef):
                names.add(node.name)
    return names


def errors(nb: nbformat.NotebookNode) -> list[tuple[int, dict, str, str]]:
    return [(k, c.metadata.get("nbgrader", {}), o["ename"], o["evalue"])
            for k, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o["output_type"] == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_get_full_marks(course, path):
    score, max_score, per_cell, graded = submit_and_grade(
        course, "solution", nbformat.read(path, as_version=4), path.stem)
    assert max_score > 0 and score == max_score, (per_cell, errors(graded))
    assert errors(graded) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_released_notebooks_get_zero_and_fail_only_at_the_exercises(course, path):
    released = course / "release" / path.stem / path.name
    score, max_score, per_cell, graded = submit_and_grade(
        course, "student", nbformat.read(released, as_version=4), path.stem)
    assert max_score > 0 and score == 0, per_cell
    answers = solution_names(nbformat.read(path, as_version=4))
    for k, meta, ename, evalue in errors(graded):
        if ename == "NotImplementedError":
            assert meta.get("solution") or meta.get("grade"), f"cell {k}: outside an exercise"
        else:
            # a test cell may name an answer the stub never defined, nothing else may fail
            assert meta.get("grade") and ename == "NameError", (k, ename, evalue)
            assert evalue.split("'")[1] in answers, (k, evalue)
    failed = {meta["grade_id"] for _, meta, _, _ in errors(graded) if meta.get("grade")}
    assert failed == set(per_cell), "every test cell fails in the released notebook"


@pytest.mark.slow
def test_one_wrong_answer_loses_only_its_points(course):
    path = ROOT / "notebooks" / f"{WRONG_NB}.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "ex2")
    assert WRONG_OLD in cell.source + "\n"
    cell.source = (cell.source + "\n").replace(WRONG_OLD, WRONG_NEW).rstrip("\n")
    score, max_score, per_cell, graded = submit_and_grade(course, "wrong", nb, WRONG_NB)
    lost = {k for k, v in per_cell.items() if v == 0}
    assert lost == {"ex2-check"}, per_cell
    assert score == max_score - 1  # ex2 is worth 1 point
    outs = "".join(o.get("text", "") for c in graded.cells
                   if c.metadata.get("nbgrader", {}).get("grade_id") == "ex2-check"
                   for o in c.outputs)
    assert "Exercise 2 (more than 1, shrinking with b): passed" in outs  # the visible part


def test_layout_errors_are_named():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Use `### BEGIN SOLUTION` markers.")]
    with pytest.raises(make_student.LayoutError, match="cell 0: solution marker text"):
        make_student.validate(nb, "nb")
    nb.cells = [nbformat.v4.new_code_cell("x = 1\n### BEGIN HIDDEN TESTS\nassert x\n"
                                          "### END HIDDEN TESTS")]
    with pytest.raises(make_student.LayoutError, match="hidden tests outside a grade cell"):
        make_student.validate(nb, "nb")


def test_every_notebook_is_a_valid_assignment():
    total = 0.0
    for path in NOTEBOOKS:
        n_sol, n_test, pts = make_student.validate(nbformat.read(path, as_version=4), path.name)
        assert n_sol >= 2 and n_test == n_sol and pts > 0, path.name
        total += pts
    assert total >= 25
