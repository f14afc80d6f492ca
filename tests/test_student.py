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
