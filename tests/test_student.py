"""``make student`` (tools/make_student.py): solutions removed, outputs cleared; executed, the
solution version passes its checks and the student version fails exactly at the exercises."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exercise_fixture.ipynb"
sys.path.insert(0, str(ROOT / "tools"))
import make_student  # noqa: E402


def tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def run(nb):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def errors(nb) -> dict[int, str]:
    return {k: o["ename"] for k, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o["output_type"] == "error"}


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def test_strip_solutions_keeps_indentation_and_counts():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\ny = 1"
    out, n = make_student.strip_solutions(src, "code")
    assert n == 1
    assert out == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\ny = 1"
    md, n = make_student.strip_solutions("Q?\n### BEGIN SOLUTION\nA.\n### END SOLUTION", "markdown")
    assert (md, n) == ("Q?\nYOUR ANSWER HERE", 1)


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx = 1",
                                 "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_an_error(src):
    with pytest.raises(make_student.MarkerError, match="cell 7"):
        make_student.strip_solutions(src, "code", "nb cell 7")


def test_cli_writes_student_versions(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_student.py"), str(FIXTURE),
                        "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "3 solution block(s) removed" in r.stdout
    nb = nbformat.read(tmp_path / FIXTURE.name, as_version=4)
    joined = "\n".join(c.source for c in nb.cells)
    assert "BEGIN SOLUTION" not in joined and "2 * x" not in joined and "after ** 2\n" not in joined
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "make_student.py"),
                          str(tmp_path / "missing.ipynb"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such notebook" in bad.stderr


@pytest.mark.slow
def test_solution_passes_and_student_fails_exactly_at_the_exercises():
    solution = run(nbformat.read(FIXTURE, as_version=4))
    assert errors(solution) == {}
    checks = [k for k, c in enumerate(solution.cells) if "check" in tags(c)]
    assert [text(solution.cells[k]).strip() for k in checks] == [
        "Exercise 1: passed", "Exercise 2: passed"]

    student, n = make_student.student_version(nbformat.read(FIXTURE, as_version=4))
    assert n == 3
    err = errors(run(student))
    # Every check fails; nothing fails outside the exercise and check cells.
    assert set(checks) <= set(err)
    assert all(tags(student.cells[k]) & {"exercise", "check"} for k in err)
    # Exercise 1 defines double() with a stub body: its check raises NotImplementedError.
    # Exercise 2 is top-level code: the cell raises, and its check cannot find `answer`.
    ex2 = [k for k, c in enumerate(student.cells) if "exercise" in tags(c)][1]
    assert err == {checks[0]: "NotImplementedError", ex2: "NotImplementedError",
                   checks[1]: "NameError"}
    assert "the end 4" in text(student.cells[-1])


# ---------------------------------------------------------------------------- the notebooks

# The notebooks that carry exercises with check cells and the series map.
EXERCISE_STEMS = ["01_roundoff_error", "02_qe_vs_accuracy", "03_qem_tradeoffs",
                  "04_runtime_scaling", "05_brecq_and_mixquant", "07_brecq_opened_up",
                  "08_transformers"]
WITH_EXERCISES = [ROOT / "notebooks" / f"{s}.ipynb" for s in EXERCISE_STEMS]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_notebook_has_checked_exercises(path):
    nb = nbformat.read(path, as_version=4)
    kinds = [("exercise" if "exercise" in tags(c) else "check" if "check" in tags(c) else None)
             for c in nb.cells]
    exercises = [k for k, t in enumerate(kinds) if t == "exercise"]
    assert 2 <= len(exercises) <= 4, f"{path.name}: {len(exercises)} exercise cells"
    for k in exercises:
        assert make_student.BEGIN in nb.cells[k].source, f"{path.name} cell {k}: no solution"
        nxt = next(t for t in kinds[k + 1:] if t is not None)
        assert nxt == "check", f"{path.name} cell {k}: exercise not followed by a check cell"
    # As committed (with solutions) every check passed and printed so.
    for k, t in enumerate(kinds):
        if t == "check":
            assert ": passed" in text(nb.cells[k]), f"{path.name} cell {k}: check did not pass"
    student, n = make_student.student_version(nb, path.name)
    assert n >= len(exercises)
    for k in exercises:
        assert make_student.BEGIN not in student.cells[k].source
        assert "raise NotImplementedError()" in student.cells[k].source


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_notebook_has_series_map(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    assert "**Series:**" in first and "**Run time:**" in first and "RUNTIME" not in first
    assert "**Previous:**" in first and "**Next:**" in first
