"""Structure of the committed notebooks: title, Colab badge, install cell, clean in-order run.

nbval (``make test``) re-executes the notebooks; these checks look at the committed files
themselves, so an unexecuted, out-of-order or error-carrying notebook fails even before that.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
EXPECTED = [
    "01_roundoff_error",
    "02_qe_vs_accuracy",
    "03_qem_tradeoffs",
    "04_runtime_scaling",
    "05_brecq_and_mixquant",
    "06_which_layers_matter",
    "07_brecq_opened_up",
    "08_transformers",
]
MAX_BYTES = 1_500_000


def repo_url() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- REPO_URL -->\s*(\S+?)\s*<!-- /REPO_URL -->", text)
    assert m, "README.md must define the repository URL between <!-- REPO_URL --> markers"
    return m.group(1).rstrip("/")


def badge_url(url: str, stem: str) -> str:
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?", url)
    assert m, f"README's repository URL is not a GitHub URL: {url}"
    owner, repo = m.groups()
    return (f"https://colab.research.google.com/github/{owner}/{repo}/blob/main/notebooks/"
            f"{stem}.ipynb")


def load(stem: str) -> dict:
    return json.loads((NB_DIR / f"{stem}.ipynb").read_text())


def src(cell: dict) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def test_badge_url_derivation():
    assert badge_url("https://github.com/a/b", "01_x") == (
        "https://colab.research.google.com/github/a/b/blob/main/notebooks/01_x.ipynb")
    assert badge_url("https://github.com/a/b.git", "x").endswith("/github/a/b/blob/main/notebooks/"
                                                                   "x.ipynb")


def test_all_notebooks_exist():
    present = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))
    assert present == EXPECTED


@pytest.fixture(params=EXPECTED)
def nb(request):
    return request.param, load(request.param)


def test_starts_with_markdown_title(nb):
    _, book = nb
    first = book["cells"][0]
    assert first["cell_type"] == "markdown"
    assert src(first).lstrip().startswith("# "), "first cell must start with a '# Title'"
    assert "learn" in src(first).lower(), "first cell must say what the reader will learn"


def test_colab_badge_matches_readme(nb):
    stem, book = nb
    want = badge_url(repo_url(), stem)
    md = "\n".join(src(c) for c in book["cells"][:3] if c["cell_type"] == "markdown")
    links = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"'>]+", md)
    assert links, "no Colab badge in the first markdown cells"
    assert all(link == want for link in links), f"badge links {links} != {want}"
    assert "colab-badge.svg" in md


def setup_cell(book: dict) -> str:
    code = [src(c) for c in book["cells"] if c["cell_type"] == "code"]
    install = [c for c in code[:3] if "google.colab" in c]
    assert install, "one of the first code cells must be the Colab-only set-up cell"
    return install[0]


def test_colab_only_install_cell(nb):
    _, book = nb
    cell = setup_cell(book)
    assert 'IN_COLAB = "google.colab" in sys.modules' in cell
    lines = cell.splitlines()
    guard = [i for i, ln in enumerate(lines) if ln.startswith("if IN_COLAB:")]
    assert len(guard) == 1
    head, guarded = lines[: guard[0]], lines[guard[0] + 1:]
    # nothing is installed outside the guard; everything after it is indented under it
    assert not any("pip" in ln or "git" in ln for ln in head)
    assert all(not ln.strip() or ln.startswith("    ") for ln in guarded)
    body = "\n".join(guarded)
    assert f'REPO_URL = "{repo_url()}"' in body  # README is the one place the URL is defined
    for needed in ('"git", "clone"', '"fetch"', '"checkout"', 'notebooks" / "EXECUTED_WITH"',
                   '"pip", "install"', "sys.path.insert(0,", "raise RuntimeError"):
        assert needed in body, f"set-up cell lacks {needed}"
    # failures are raised, never swallowed by shell escapes
    assert not any(ln.lstrip().startswith(("!", "%pip")) for ln in guarded)


def test_setup_cell_is_the_same_everywhere():
    cells = {stem: setup_cell(load(stem)) for stem in EXPECTED}
    assert len(set(cells.values())) == 1, "the Colab set-up cells differ between notebooks"


def test_executed_with_names_a_commit():
    text = (NB_DIR / "EXECUTED_WITH").read_text()
    ref = text.split()[0]
    assert re.fullmatch(r"[0-9a-f]{40}", ref), "notebooks/EXECUTED_WITH must start with a commit"
    if (ROOT / ".git").exists() and shutil.which("git"):
        known = subprocess.run(["git", "cat-file", "-e", f"{ref}^{{commit}}"], cwd=ROOT,
                               capture_output=True)
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip() == "true"
        assert known.returncode == 0 or shallow, f"commit {ref} is not in this repository"


def test_no_widget_view_saved(nb):
    """A reader sees a static snapshot, never `interactive(children=...` or a dead widget view."""
    stem, book = nb
    assert "widgets" not in book.get("metadata", {}), f"{stem}: saved widget state"
    for c in book["cells"]:
        for out in c.get("outputs", []):
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, stem
            plain = "".join(data.get("text/plain", ""))
            assert not plain.startswith("interactive("), stem


def test_imports_package_and_seeds(nb):
    _, book = nb
    code = "\n".join(src(c) for c in book["cells"] if c["cell_type"] == "code")
    assert "mixquant_lite" in code
    assert "seed_everything(" in code or "torch.manual_seed(" in code


def test_executed_in_order_without_errors(nb):
    stem, book = nb
    cells = [c for c in book["cells"] if c["cell_type"] == "code" and src(c).strip()]
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{stem}: execution counts {counts}"
    for c in cells:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", f"{stem}: error output in {src(c)[:80]!r}"
            if out["output_type"] == "stream":
                assert out["name"] != "stderr" or "Warning" not in "".join(out["text"]), (
                    f"{stem}: warning in {src(c)[:80]!r}")


def test_figures_have_printed_takeaways(nb):
    stem, book = nb
    n_fig = n_takeaway = 0
    for c in book["cells"]:
        if c["cell_type"] != "code":
            continue
        outs = c.get("outputs", [])
        if any("image/png" in o.get("data", {}) for o in outs):
            n_fig += 1
            text = "".join("".join(o.get("text", "")) for o in outs if o["output_type"] == "stream")
            n_takeaway += bool(text.strip())
    assert n_fig >= 1, f"{stem} shows no figure"
    assert n_takeaway == n_fig, f"{stem}: {n_fig - n_takeaway} figure(s) without a printed line"


def test_committed_size(nb):
    stem, _ = nb
    assert (NB_DIR / f"{stem}.ipynb").stat().st_size < MAX_BYTES
