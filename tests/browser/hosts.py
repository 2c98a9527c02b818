"""The explorer in each host, as a Playwright page: JupyterLab, Notebook 7, marimo and the exported page.

Every host runs the same kernel code (:data:`EXPLORE`) and answers the same two probes, so one test
body covers them all: :meth:`Host.report` asks the kernel for the widget's traits (view → Python),
:meth:`Host.set_layer_one` moves the layer from Python (Python → view). Selectors go through
Playwright locators, which pierce marimo's shadow DOM (``document.querySelector`` does not).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page

from .jupyter import free_port, running_lab, write_notebook

EXPLORE = """\
import vitlens_widgets as vl

lens = vl.Lens.demo()
images = vl.data.shapes(3, seed=2).images
explorer = vl.explore(lens, images)"""

REPORT = 'f"kernel layer={explorer.layer} cls={explorer.cls}"'  # what the kernel holds, as one line of text
SET_LAYER = "explorer.layer = 1"
KILL_KERNEL = "import os\nos._exit(1)  # the kernel dies"
REPORT_PATTERN = re.compile(r"kernel layer=(-?\d+) cls=(\d+)")


@dataclass
class Host:
    """A host with the explorer shown in ``page``; ``report``/``set_layer_one`` run kernel code."""

    name: str
    page: Page
    _report: Callable[[], str] | None = field(repr=False)  # None: no kernel (the exported page)
    _set_layer: Callable[[], None] | None = field(repr=False)
    _kill_kernel: Callable[[], None] | None = field(repr=False)
    errors: list[str] = field(default_factory=list)
    shown_at: float = field(default_factory=time.monotonic)  # when the explorer had painted

    @property
    def has_kernel(self) -> bool:
        return self._report is not None

    def report(self) -> tuple[int, int]:
        """The widget's ``(layer, cls)`` as the kernel sees them now."""
        assert self._report, f"{self.name} has no kernel"
        match = REPORT_PATTERN.search(self._report())
        assert match, "the kernel's report did not arrive"
        return int(match[1]), int(match[2])

    def set_layer_one(self) -> None:
        """``explorer.layer = 1`` in the kernel."""
        assert self._set_layer, f"{self.name} has no kernel"
        self._set_layer()

    def kill_kernel(self) -> None:
        """End the kernel's process, as a crash would (the host is unusable afterwards)."""
        assert self._kill_kernel, f"{self.name} has no kernel"
        self._kill_kernel()


@contextlib.contextmanager
def serving(cmd: list[str], ready_url: str, log: Path, timeout: float = 90) -> Iterator[subprocess.Popen]:
    """Run a web server until ``ready_url`` answers; stop it on exit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTER_PLATFORM_DIRS": "1", "MARIMO_SKIP_UPDATE_CHECK": "1"}
    process = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[2]} exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(ready_url, timeout=2):
                break
            if time.time() > deadline:
                raise TimeoutError(f"{cmd[2]} did not start in {timeout}s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page that records console errors and uncaught exceptions."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def wait_for_explorer(page: Page, timeout: float = 180_000) -> None:
    """Until the explorer's grid is painted (the view drops ``vl-loading`` after its first frame)."""
    page.locator(".vl-explorer canvas.vl-heat").wait_for(state="attached", timeout=timeout)
    page.locator(".vl-explorer:not(.vl-loading)").wait_for(timeout=60_000)


@contextlib.contextmanager
def notebook7(browser: Browser, root: Path) -> Iterator[Host]:
    """Jupyter Notebook 7 (``jupyter notebook``) with a notebook whose first cell shows ``explorer``."""
    write_explore_notebook(root / "explore.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "notebook", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/api/status?token={token}", root / "notebook.log"):
        yield from jupyter_host("notebook7", browser, f"{base}/notebooks/explore.ipynb?token={token}")


def write_explore_notebook(path: Path) -> None:
    """Cell 0 shows the explorer, cell 1 prints the kernel's report, cell 2 sets the layer from Python,
    cell 3 kills the kernel."""
    write_notebook(path, [f"{EXPLORE}\nexplorer", f"print({REPORT})", SET_LAYER, KILL_KERNEL])


def jupyter_host(name: str, browser: Browser, url: str) -> Iterator[Host]:
    """Open a notebook written by :func:`write_explore_notebook` and run its first cell (Lab or Notebook 7)."""
    page, errors = new_page(browser)
    page.goto(url)
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.first.wait_for(timeout=120_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)  # the kernel connection settles
    errors.clear()  # Notebook 7.6 itself throws "reading 'schema'" while loading its settings
    run_cell(page, 0)
    wait_for_explorer(page)

    def report() -> str:
        run_cell(page, 1)
        return cells.nth(1).locator(".jp-OutputArea-output").inner_text()

    def kill() -> None:
        page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-InputArea-prompt").click()
        page.keyboard.press("Shift+Enter")  # no execution count will come: the kernel is gone

    yield Host(name, page, report, lambda: run_cell(page, 2), kill, errors)
    page.close()


def run_cell(page: Page, index: int, timeout: float = 180) -> None:
    """Run one notebook cell (JupyterLab or Notebook 7) and wait for its new execution count."""
    prompt = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    for _ in range(3):  # a busy page can drop the very first keystroke: press again until the cell is queued
        prompt.click()  # command mode on this cell, whatever had focus
        page.keyboard.press("Shift+Enter")
        if poll(lambda: prompt.inner_text() != before, timeout=10):
            break
    if not poll(lambda: re.fullmatch(r"\[\d+\]:", now := prompt.inner_text()) and now != before, timeout):
        raise TimeoutError(f"cell {index} did not finish in {timeout} s (prompt {prompt.inner_text()!r})")


def poll(condition: Callable[[], object], timeout: float) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


MARIMO_APP = """\
import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell
def _():
{explore}
    return (explorer,)


@app.cell
def _(explorer):
    explorer  # shown as-is: marimo wraps any AnyWidget in mo.ui.anywidget
    return


@app.cell
def _(explorer, mo):
    report = mo.ui.button(label="Report traits", value=0, on_click=lambda n: n + 1)
    set_layer = mo.ui.button(label="Layer 1 from Python", on_click=lambda _: setattr(explorer, "layer", 1))
    kill = mo.ui.button(label="Kill the kernel", on_click=lambda _: __import__("os")._exit(1))
    mo.hstack([report, set_layer, kill])
    return (report,)


@app.cell
def _(explorer, mo, report):
    mo.plain_text(f"report {{report.value}}: " + {report})  # rerun by each click
    return


if __name__ == "__main__":
    app.run()
"""


@contextlib.contextmanager
def marimo(browser: Browser, root: Path) -> Iterator[Host]:
    """``marimo run`` of an app whose cell shows ``explorer``, with two buttons for the kernel probes."""
    app = root / "explore_app.py"
    app.write_text(MARIMO_APP.format(explore=textwrap.indent(EXPLORE, "    "), report=REPORT))
    port = free_port()
    cmd = [sys.executable, "-m", "marimo", "run", str(app), "--headless", "--host=127.0.0.1", f"--port={port}"]
    cmd += ["--no-token", "--no-sandbox"]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, f"{base}/health", root / "marimo.log"):
        page, errors = new_page(browser)
        page.goto(base)
        wait_for_explorer(page)

        clicks = itertools.count(1)

        def report() -> str:
            page.get_by_role("button", name="Report traits").click()
            line = page.get_by_text(re.compile(rf"^report {next(clicks)}: "))
            line.wait_for(timeout=30_000)
            return line.inner_text()

        def set_layer() -> None:
            page.get_by_role("button", name="Layer 1 from Python").click()

        def kill() -> None:
            page.get_by_role("button", name="Kill the kernel").click()

        yield Host("marimo", page, report, set_layer, kill, errors)
        page.close()


@contextlib.contextmanager
def exported(browser: Browser, root: Path) -> Iterator[Host]:
    """The page ``vl.export_html`` writes, opened from disk: the same view, no kernel."""
    import vitlens_widgets as vl

    path = root / "explorer.html"
    vl.export_html(vl.Lens.demo(), vl.data.shapes(3, seed=2).images, path)
    page, errors = new_page(browser)
    page.route(
        re.compile(r"^(https?|wss?)://"), lambda route: (errors.append(f"network: {route.request.url}"), route.abort())
    )
    page.goto(path.as_uri())
    wait_for_explorer(page)
    yield Host("exported", page, None, None, None, errors)  # a network request shows up as an error
    page.close()


@contextlib.contextmanager
def jupyterlab(browser: Browser, root: Path) -> Iterator[Host]:
    """JupyterLab 4 with the same notebook (Lab-only checks: test_explorer_browser.py)."""
    write_explore_notebook(root / "explore.ipynb")
    with running_lab(root) as lab:
        yield from jupyter_host("jupyterlab", browser, lab.url("explore.ipynb"))


HOSTS = {"jupyterlab": jupyterlab, "notebook7": notebook7, "marimo": marimo, "exported": exported}
