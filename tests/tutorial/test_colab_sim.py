"""Colab, simulated: the set-up cell and the imports of every notebook in a fresh environment.

What is simulated: a fresh virtual environment that already has torch (and Jupyter) but not this
package (a ``.pth`` line exposes the site-packages that hold torch, as Colab's image holds its
torch); a stub ``google.colab`` module imported at kernel start; the repository URL pointed at a
local git repository built from this working tree (code commit A, then a commit that records A in
``notebooks/EXECUTED_WITH``, as tools/run_notebooks.py --record-commit does); ``/content``
replaced by a temporary folder; a fresh kernel per notebook. What is not: Colab's own image,
network and GitHub (see README, "Colab").

Checked: before the set-up cell ``import mixquant_lite`` fails; after it, without a restart, the
notebook's import cell runs and ``mixquant_lite`` comes from the clone at commit A; torch is the
environment's own (not reinstalled); re-running the cell after a new recorded commit moves the
clone to it; a clone that cannot be made stops the cell with ``Set-up failed``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
pytestmark = pytest.mark.slow


def git(*args, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def readme_url() -> str:
    import re

    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- REPO_URL -->\s*(\S+?)\s*<!-- /REPO_URL -->", text)
    return m.group(1).rstrip("/")


def cells(stem: str) -> tuple[str, str]:
    """The notebook's set-up cell and the code cell after it (its imports)."""
    book = json.loads((NB_DIR / f"{stem}.ipynb").read_text())
    code = ["".join(c["source"]) for c in book["cells"] if c["cell_type"] == "code"]
    i = next(i for i, c in enumerate(code) if "google.colab" in c)
    return code[i], code[i + 1]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    tmp = tmp_path_factory.mktemp("colab")
    # 1. the "GitHub" repository: this working tree's files (tracked + untracked, not ignored)
    src = tmp / "origin"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    for args in (("init", "-q", "-b", "main"), ("config", "user.email", "sim@example.invalid"),
                 ("config", "user.name", "sim"), ("add", "-A"), ("commit", "-qm", "code")):
        git(*args, cwd=src)
    code_commit = git("rev-parse", "HEAD", cwd=src)
    (src / "notebooks" / "EXECUTED_WITH").write_text(code_commit + "\n")
    git("add", "-A", cwd=src)
    git("commit", "-qm", "record the commit the notebooks were executed with", cwd=src)
    # 2. a fresh venv with torch but without this package; a stub google.colab
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    vsite = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()"
                            "['purelib'])"], check=True, capture_output=True, text=True).stdout
    import torch

    torch_site = Path(torch.__file__).resolve().parents[1]
    Path(vsite.strip(), "colab_image.pth").write_text(f"{torch_site}\n")
    stub = tmp / "stub"
    (stub / "google" / "colab").mkdir(parents=True)
    (stub / "google" / "colab" / "__init__.py").write_text('"""Stub of Colab\'s module."""\n')
    content = tmp / "content"
    content.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MIXQUANT_STATIC_WIDGETS")}
    env.update(PYTHONPATH=str(stub), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return {"src": src, "commit": code_commit, "vpy": vpy, "content": content, "env": env,
            "torch_file": torch.__file__}


def colab_cell(cell: str, sim, url: str | None = None) -> str:
    return (cell.replace(readme_url(), str(url or sim["src"]))
            .replace('Path("/content/mixquant-lite")', f'Path("{sim["content"]}/mixquant-lite")'))


def run_cells(sim, sources: list[str], *, allow_errors: bool = False):
    """Execute ``sources`` in a fresh kernel of the simulated environment; returns the outputs."""
    import nbformat
    from jupyter_client import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    from jupyter_client.kernelspec import KernelSpecManager

    specs = Path(sim["vpy"]).parents[1] / "kernels"
    (specs / "colabsim").mkdir(parents=True, exist_ok=True)
    (specs / "colabsim" / "kernel.json").write_text(json.dumps({
        "argv": [str(sim["vpy"]), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab simulation", "language": "python"}))
    km = KernelManager(kernel_name="colabsim",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    client = NotebookClient(nb, km=km, timeout=600, allow_errors=allow_errors)
    client.execute(env=sim["env"], cwd=str(sim["content"]))
    outs = [o for c in nb.cells for o in c.outputs]
    return ["".join(o.get("text", "")) + o.get("evalue", "") for o in outs], nb


CHECK = """
import mixquant_lite, torch
print("PKG", mixquant_lite.__file__)
print("TORCH", torch.__file__)
"""


def test_every_notebook_sets_up_and_imports(sim):
    stems = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))
    clone = sim["content"] / "mixquant-lite"
    for k, stem in enumerate(stems):
        setup, imports = cells(stem)
        pre = ["import google.colab"]
        if k == 0:  # a fresh runtime: the package is not importable before the set-up cell
            pre.append("try:\n    import mixquant_lite\nexcept ModuleNotFoundError:\n"
                       "    print('NOT INSTALLED')\nelse:\n    raise AssertionError('installed')")
        outs, nb = run_cells(sim, [*pre, colab_cell(setup, sim), imports, CHECK])
        text = "\n".join(outs)
        if k == 0:
            assert "NOT INSTALLED" in text
        assert f"mixquant-lite {sim['commit'][:12]} from {sim['src']}" in text, text
        assert f"PKG {clone / 'mixquant_lite' / '__init__.py'}" in text, text
        assert f"TORCH {sim['torch_file']}" in text  # Colab's torch, not a new one
        assert git("rev-parse", "HEAD", cwd=clone) == sim["commit"]


def test_rerun_updates_the_clone(sim):
    clone = sim["content"] / "mixquant-lite"
    if not clone.exists():
        run_cells(sim, ["import google.colab", colab_cell(cells("01_roundoff_error")[0], sim)])
    src = sim["src"]
    (src / "docs" / "sim-change.md").parent.mkdir(exist_ok=True)
    (src / "docs" / "sim-change.md").write_text("a later code commit\n")
    git("add", "-A", cwd=src)
    git("commit", "-qm", "newer code", cwd=src)
    newer = git("rev-parse", "HEAD", cwd=src)
    (src / "notebooks" / "EXECUTED_WITH").write_text(newer + "\n")
    git("commit", "-qam", "notebooks re-executed", cwd=src)
    setup, _ = cells("03_qem_tradeoffs")
    outs, _ = run_cells(sim, ["import google.colab", colab_cell(setup, sim), CHECK])
    assert git("rev-parse", "HEAD", cwd=clone) == newer
    assert f"mixquant-lite {newer[:12]}" in "\n".join(outs)


def test_failed_clone_stops_loudly(sim, tmp_path):
    setup, _ = cells("01_roundoff_error")
    bad = dict(sim, content=tmp_path)
    cell = colab_cell(setup, bad, url=tmp_path / "nope")
    outs, nb = run_cells(bad, ["import google.colab", cell], allow_errors=True)
    err = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert err and err[0].ename == "RuntimeError"
    assert "Set-up failed: git clone" in err[0].evalue


def test_wheel_fallback_when_the_clone_fails(sim, tmp_path):
    """No clone (the URL is unreachable), a wheel uploaded into /content: the cell installs the
    wheel and says so; without the wheel it stops (test_failed_clone_stops_loudly)."""
    content = tmp_path / "content"
    content.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(content), str(sim["src"])],
                   check=True, capture_output=True)
    wheel = next(content.glob("mixquant_lite-*.whl"))
    bad = dict(sim, content=content)
    setup, _ = cells("01_roundoff_error")
    try:
        outs, nb = run_cells(bad, ["import google.colab", colab_cell(setup, bad,
                                                                      url=tmp_path / "nope"),
                                   CHECK])
        text = "\n".join(outs)
        assert f"installed from the uploaded wheel {wheel.name}" in text, text
        assert "clone of" in text and "failed: Set-up failed: git clone" in text
        pkg = next(ln for ln in text.splitlines() if ln.startswith("PKG "))
        assert "site-packages" in pkg and "mixquant-lite/" not in pkg  # the wheel, not a clone
        assert f"TORCH {sim['torch_file']}" in text
    finally:  # the other tests expect a runtime without the package installed
        subprocess.run([str(sim["vpy"]), "-m", "pip", "uninstall", "-q", "-y", "mixquant-lite"],
                       capture_output=True)
