"""The live widgets in a real browser: JupyterLab on 127.0.0.1 driven by headless Chromium.

Starts JupyterLab (random free port, random token) on copies of notebooks 01 and 03, opens each in
Debian's ``chromium`` through Playwright (``executable_path``; Playwright's own browser download is
not used), runs all cells, moves every control and checks that the rendered output changes to the
values the package computes for the new setting. Screenshots: ``build/browser/``.

Run with ``make test-browser``. Without chromium the test skips, except when
``MIXQUANT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) or ``CI`` is set: then it fails.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "browser"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _required() -> bool:
    return bool(os.environ.get("MIXQUANT_REQUIRE_BROWSER") or os.environ.get("CI"))


def _missing(why: str):
    if _required():
        pytest.fail(f"browser test required (CI / MIXQUANT_REQUIRE_BROWSER) but {why}")
    pytest.skip(why)


def chromium_path() -> str:
    for name in (os.environ.get("MIXQUANT_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    _missing("chromium not found (Debian: apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving copies of notebooks 01 and 03."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[browser]')")
    chromium = chromium_path()
    work = tmp_path_factory.mktemp("lab")
    for stem in ("01_roundoff_error", "03_qem_tradeoffs"):
        shutil.copy(ROOT / "notebooks" / f"{stem}.ipynb", work)
    # JupyterLab 4 renders only the cells near the viewport ("windowing"): a widget far down a
    # long notebook would not be in the DOM to read. Render every cell.
    settings = work / ".cfg" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}\n')
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MIXQUANT_STATIC_WIDGETS"}  # live widgets
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(":"),
               JUPYTER_CONFIG_DIR=str(work / ".cfg"), JUPYTER_RUNTIME_DIR=str(work / ".rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(work / ".ws"), OMP_NUM_THREADS="1")
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
         "--ServerApp.port_retries=0", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not start:\n" + (work / "lab.log").read_text()[-3000:])
            time.sleep(1)
    yield {"base": base, "token": token, "chromium": chromium}
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=lab["chromium"], headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def open_and_run_all(browser, lab, stem: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{lab['base']}/lab/tree/{stem}.ipynb?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # JupyterLab may ask which kernel to start; accept the notebook's (Python 3), then wait idle
    deadline = time.monotonic() + 180
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    status = page.locator("#jp-main-statusbar")
    while "| Idle" not in (status.inner_text() if status.count() else ""):
        if select.count() and select.first.is_visible():
            select.first.click()
        if time.monotonic() > deadline:
            shot(page, f"{stem}_FAILED_kernel")
            raise AssertionError(f"{stem}: the kernel never became idle")
        time.sleep(1)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    return page, errors


def wait_text(page, selector: str, pattern: str, timeout_s: float) -> str:
    """Wait until the text of ``selector`` matches ``pattern``; return the text."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        loc = page.locator(selector)
        if loc.count():
            text = loc.first.inner_text()
            if re.search(pattern, text):
                return text
        time.sleep(0.5)
    shot(page, "FAILED_" + re.sub(r"\W+", "_", pattern)[:60])
    raise AssertionError(f"{selector!r} never matched {pattern!r}; last text:\n{text}")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def model_and_table():
    from mixquant_lite.table import qe_table
    from mixquant_lite.zoo.models import load_pretrained

    model = load_pretrained("resnet20-mnist5k")
    return model, qe_table(model)


def test_roundoff_widget_in_jupyterlab(lab, browser):
    from mixquant_lite.tutorial.widgets import RoundoffExplorer

    model, table = model_and_table()
    ref = RoundoffExplorer(model, list(table.layers))
    page, errors = open_and_run_all(browser, lab, "01_roundoff_error")
    box = ".mixquant-roundoff"
    wait_text(page, box, r"showing layer2\.1\.conv2 at 3 bits", 600)
    text = wait_text(page, box, re.escape(ref.text("layer2.1.conv2", 3)), 30)
    page.locator(box).scroll_into_view_if_needed()
    shot(page, "01_initial")
    assert "Static snapshot" not in text  # a live widget, not the headless snapshot
    # bits slider: one step right with the keyboard (released at once: continuous_update=False)
    page.locator(f"{box} .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    wait_text(page, box, r"showing layer2\.1\.conv2 at 4 bits", 120)
    wait_text(page, box, re.escape(ref.text("layer2.1.conv2", 4)), 30)
    shot(page, "01_bits4")
    # layer dropdown: the small stem layer
    page.locator(f"{box} select").first.select_option("conv1")
    wait_text(page, box, r"showing conv1 at 4 bits", 120)
    wait_text(page, box, re.escape(ref.text("conv1", 4)), 30)
    page.locator(box).scroll_into_view_if_needed()
    shot(page, "01_conv1_bits4")
    assert not [e for e in errors if "Error displaying widget" in e or "model not found" in e]
    page.close()


def test_qem_widget_in_jupyterlab(lab, browser):
    from mixquant_lite.tutorial.widgets import QEMExplorer

    model, table = model_and_table()
    ref = QEMExplorer(table, model, None, qem=300.0)  # plans and average bits, no evaluation
    pts = list(ref.points)
    i0 = pts.index(ref.qem)

    def expected(q: float) -> str:  # the rendered line up to the accuracy
        return ref.text(q).split(", not evaluated")[0]

    page, errors = open_and_run_all(browser, lab, "03_qem_tradeoffs")
    box = ".mixquant-qem"
    wait_text(page, box, rf"showing QEM {re.escape(ref.label(ref.qem))} \(evaluated", 1500)
    wait_text(page, box, re.escape(expected(ref.qem)), 30)
    page.locator(box).scroll_into_view_if_needed()
    shot(page, "03_initial")
    handle = page.locator(f"{box} .noUi-handle").first
    seen = []
    # two steps right (across the last 5 -> 4 bit change points), then back left: each step is
    # the next plan; the way back answers from the cache
    for step, key in ((1, "ArrowRight"), (2, "ArrowRight"), (1, "ArrowLeft"), (0, "ArrowLeft")):
        q = pts[i0 + step]
        handle.focus()
        page.keyboard.press(key)
        status = wait_text(page, box, rf"showing QEM {re.escape(ref.label(q))} \(", 300)
        text = wait_text(page, box, re.escape(expected(q)), 30)
        assert expected(q) in text
        seen.append(q)
        if key == "ArrowLeft":
            assert "cached plan" in status, status
        shot(page, f"03_qem_{ref.label(q)}")
    plans = {tuple(ref.view(q)[0]["bits"].values()) for q in seen}
    assert len(plans) == 3  # each side of a change point is another plan
    assert not [e for e in errors if "Error displaying widget" in e or "model not found" in e]
    page.close()
