"""A saved notebook viewed without a kernel (an HTML export) still shows each explorer as a picture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_quickstart.ipynb"

# nbconvert writes each PNG output as an <img> in a .jp-RenderedImage; the explorer's follows its widget output.
SNAPSHOTS = """() => Array.from(document.querySelectorAll(
    '.jp-OutputArea-child:has(script[type="application/vnd.jupyter.widget-view+json"]) + .jp-OutputArea-child .jp-RenderedImage img'
  )).map(img => {
  const box = img.getBoundingClientRect();
  return {loaded: img.complete && img.naturalWidth > 0, width: box.width, height: box.height,
          visible: getComputedStyle(img.closest('.jp-OutputArea-child') || img).display !== 'none'};
})"""


def test_nbconvert_html_shows_the_snapshot_in_a_real_browser(browser, tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    jupyter = Path(sys.executable).with_name("jupyter")
    subprocess.run(
        [str(jupyter), "nbconvert", "--execute", "--to", "html", NOTEBOOK.name],
        cwd=tmp_path,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    html = tmp_path / "01_quickstart.html"
    text = html.read_text()
    assert "application/vnd.jupyter.widget-state+json" in text  # nbconvert saved the widget state...
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.route("**/*", lambda route: route.abort() if route.request.url.startswith("http") else route.continue_())
    page.goto(html.as_uri())  # ...but offline the widget manager cannot load: the snapshot must stand in
    page.wait_for_load_state("load")
    snapshots = page.evaluate(SNAPSHOTS)
    assert len(snapshots) == 1
    (snapshot,) = snapshots
    assert snapshot["loaded"] and snapshot["visible"]
    assert snapshot["width"] > 300 and snapshot["height"] > 100
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    page.close()
