"""The series agrees with its findings file: every notebook's printed family verdicts (the cell
tagged ``findings``) are the ones in ``results/findings.json``, each notebook that states "What
we test" has such a family, and each notebook's stated run time is the one the runner measured."""
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FINDINGS = ROOT / "results" / "findings.json"
LINE = re.compile(r"^(?P<q>.+?): (?P<v>[^:]+?) \(p = [^,]+, (holm|bh)-adjusted p = [^)]+\)$")
sys.path.insert(0, str(ROOT / "tools"))
import run_notebooks  # noqa: E402


def printed_verdicts(nb) -> dict[str, str]:
    cells = [c for c in nb.cells if "findings" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "one family cell (tag 'findings') per notebook"
    text = "".join(o.get("text", "") for o in cells[0].get("outputs", [])
                   if o.get("output_type") == "stream")
    found = {m["q"]: m["v"] for line in text.splitlines() if (m := LINE.match(line.strip()))}
    assert found, "the family cell printed no verdicts (not executed?)"
    return found


def test_parser_reads_the_report_format():
    from mixquant_lite.stats import Family, Question

    fam = Family("x", questions=[Question("A: vs B at 2.5 bits", 0.001, effect=-1.0, better="A",
                                          worse="B")])
    m = LINE.match(fam.report())
    assert m and m["q"] == "A: vs B at 2.5 bits" and m["v"] == "B better"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_printed_verdicts_match_the_findings_file(path):
    nb = nbformat.read(path, as_version=4)
    if "**What we test**" not in nb.cells[0].source:
        pytest.skip("no family in this notebook")
    file = json.loads(FINDINGS.read_text())
    assert path.stem in file, f"{path.stem} has no entry in results/findings.json"
    recorded = {r["question"]: r["verdict"] for r in file[path.stem]}
    assert printed_verdicts(nb) == recorded


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stated_run_time_is_the_measured_one(path):
    nb = nbformat.read(path, as_version=4)
    measured = nb.metadata.get("mixquant", {}).get("run_time_s")
    assert measured is not None, "not executed by tools/run_notebooks.py (no measured run time)"
    assert run_notebooks.run_time_text(measured).strip() in nb.cells[0].source


def test_readme_series_time_is_generated_from_the_notebooks():
    import re as _re

    text = (ROOT / "README.md").read_text()
    block = _re.search(r"<!-- SERIES_TIME -->.*?<!-- /SERIES_TIME -->", text, _re.S).group(0)
    assert block == run_notebooks.series_time_text(NOTEBOOKS)
