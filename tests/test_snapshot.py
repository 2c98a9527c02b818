"""The static snapshot that stands in for the explorer where no kernel runs (GitHub, nbviewer, HTML)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image

import vitlens_widgets as vl
from vitlens_widgets.widgets.snapshot import GRID_PX, HEAT_STOPS, colour_map, snapshot_png, trajectory_image

VIRIDIS = HEAT_STOPS["sequential"]


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    return vl.Lens.demo()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return vl.data.shapes(2, seed=2).images


def test_colour_map_matches_the_front_end_stops():
    assert colour_map(np.array([0.0, 1.0, np.nan]), VIRIDIS).tolist() == [[68, 1, 84], [253, 231, 37], [68, 1, 84]]
    middle = colour_map(np.array([0.5 / 8]), VIRIDIS)[0]  # halfway between the first two stops
    assert middle.tolist() == [70, 22, 103]


def test_heat_cells_blend_the_crop_with_the_metric_colour(lens, images):
    trace = lens.trace(images[0])
    cls = trace.prediction.index
    picture = np.asarray(Image.open(io.BytesIO(snapshot_png(trace, cls, layer=3))).convert("RGB")).astype(int)
    values = trace.identifiability(cls, "resid")[3, trace.tokens.image_tokens].reshape(trace.tokens.grid)
    h, w = trace.tokens.grid
    cell = GRID_PX // h
    for r, c in [(0, 0), (3, 4), (h - 1, w - 1)]:
        y, x = r * cell + cell // 2, c * cell + cell // 2
        crop_pixel = trace.image[y * trace.image.shape[0] // GRID_PX, x * trace.image.shape[1] // GRID_PX]
        expected = 0.45 * crop_pixel + 0.55 * colour_map(values[r, c], VIRIDIS)
        assert np.abs(picture[y, x] - expected).max() <= 2


def test_explorer_displays_the_widget_then_a_snapshot(lens, images):
    InteractiveShell.instance()
    explorer = vl.explore(lens, images)
    with capture_output() as captured:
        explorer._ipython_display_()
    widget, snapshot = captured.outputs
    assert widget.data["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.model_id
    html = snapshot.data["text/html"]
    assert 'class="vitlens-snapshot"' in html
    name = lens.class_names[explorer.cls]
    assert f"identifiability of class &#x27;{name}&#x27; in the residual stream at layer 6" in html
    png = base64.b64decode(re.search(r"base64,([^\"]+)", html).group(1))
    assert png == explorer.snapshot()
    assert Image.open(io.BytesIO(png)).size[0] > GRID_PX


def test_snapshot_follows_the_view_state(lens, images):
    explorer = vl.explore(lens, images)
    first = explorer.snapshot()
    explorer.site = "mlp"
    explorer.selected = [5]
    assert explorer.snapshot() != first


def test_snapshot_lines_use_the_palette_of_the_view(lens, images):
    """[CLS] blue, the image-token mean grey, selected tokens from the palette in selection order."""
    trace = lens.trace(images[0])
    values = trace.identifiability(trace.prediction.index, "resid")
    lines = vl.plots.trajectory_lines(trace, values, [5, 9])
    assert [line.colour for line in lines] == ["#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c"]
    picture = np.asarray(trajectory_image(range(7), lines, 3, "identifiability")).reshape(-1, 3)
    colours = {tuple(p) for p in picture.tolist()}
    assert {(31, 119, 180), (127, 127, 127), (255, 127, 14), (44, 160, 44)} <= colours
