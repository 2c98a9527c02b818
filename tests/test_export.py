"""The exported page's size and opening state (its behaviour in a browser: tests/browser)."""

from __future__ import annotations

import json
import re

import vitlens_widgets as vl
from vitlens_widgets.widgets.export import _opening_state


def page_data(html: str) -> dict:
    raw = re.search(r'<script id="vitlens-data" type="application/json">(.*?)</script>', html, re.S)
    assert raw, "no inlined data"
    return json.loads(raw.group(1))


def test_the_demo_page_stays_small(tmp_path):
    """About 540 KB (docs/benchmarks.md); a regression in what is inlined shows here first."""
    size = vl.export_html(vl.Lens.demo(), vl.data.shapes(3, seed=2).images, tmp_path / "explorer.html")
    assert 300_000 < size < 600_000


def test_the_page_opens_where_the_widget_opens(tmp_path):
    lens = vl.Lens.demo()
    path = tmp_path / "explorer.html"
    vl.export_html(lens, vl.data.shapes(1, seed=2).images, path)
    explorer = vl.explore(lens, vl.data.shapes(1, seed=2).images)
    expected = {"site": explorer.site, "metric": explorer.metric, "layer": explorer.layer}
    assert page_data(path.read_text())["initial"] == expected == _opening_state(lens)
