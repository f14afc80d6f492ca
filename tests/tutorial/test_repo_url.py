"""tools/repo_url.py (make repo-url URL=...): every Colab badge, set-up cell and the README move
to the new repository; the notebook checks still hold on the result."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import repo_url  # noqa: E402


@pytest.fixture
def copy(tmp_path):
    for sub in ("notebooks", "docs"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_repoints_badges_setup_cells_and_readme(copy):
    old = repo_url.current_url(copy)
    changed = repo_url.repoint("https://github.com/teacher-x/course-copy.git/", copy)
    assert copy / "README.md" in changed and len(changed) >= 8  # README + 7 notebooks
    assert repo_url.current_url(copy) == "https://github.com/teacher-x/course-copy"
    for nb in sorted((copy / "notebooks").glob("*.ipynb")):
        text = nb.read_text()
        json.loads(text)  # still valid JSON
        assert old not in text and "colab.research.google.com/github/mixquant-lite/" not in text
        assert 'REPO_URL = \\"https://github.com/teacher-x/course-copy\\"' in text
        assert ("https://colab.research.google.com/github/teacher-x/course-copy/blob/main/"
                f"notebooks/{nb.name}") in text
    assert repo_url.repoint("https://github.com/teacher-x/course-copy", copy) == {}


@pytest.mark.parametrize("bad", ["https://gitlab.com/a/b", "github.com/a/b", "https://github.com/a",
                                 "https://github.com/a/b/c"])
def test_bad_urls_are_refused(copy, bad):
    before = (copy / "README.md").read_text()
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "repo_url.py"), bad, "--root",
                        str(copy)], capture_output=True, text=True)
    assert r.returncode == 2 and "https://github.com/OWNER/NAME" in r.stderr
    assert (copy / "README.md").read_text() == before


def test_cli_reports_what_it_changed(copy):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "repo_url.py"),
                        "https://github.com/t/c", "--root", str(copy)], capture_output=True,
                       text=True, check=True)
    assert "-> https://github.com/t/c" in r.stdout and "README.md" in r.stdout
