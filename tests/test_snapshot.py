"""The static snapshot that stands in for the explorer where no kernel runs (GitHub, nbviewer, HTML)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from PIL import Image, ImageDraw

import vitlens_widgets as vl
from vitlens_widgets.widgets import snapshot
from vitlens_widgets.widgets.payload import metric_slices
from vitlens_widgets.widgets.snapshot import (
    GRID_PX,
    HEAT_STOPS,
    SNAPSHOT_METADATA,
    colour_map,
    snapshot_png,
    trajectory_image,
)
from vitlens_widgets.widgets.specs import METRIC_SPECS, STATIC

VIRIDIS = HEAT_STOPS["sequential"]
PALETTE_FILE = json.loads((STATIC / "palette.json").read_text())  # the file js/grid.ts and js/palette.ts read
OPACITY = PALETTE_FILE["heat_opacity"]


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


def _heat_map(png: bytes) -> np.ndarray:
    """int ``[GRID_PX, GRID_PX, 3]``: the heat map part of a snapshot."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[:GRID_PX, :GRID_PX]


def _cell_centres(trace: vl.Trace):
    """Per patch: (row, column, y, x) of its cell's centre pixel and the crop's pixel there."""
    h, w = trace.tokens.grid
    for r in range(h):
        for c in range(w):
            y, x = r * GRID_PX // h + GRID_PX // h // 2, c * GRID_PX // w + GRID_PX // w // 2
            crop = trace.image[y * trace.image.shape[0] // GRID_PX, x * trace.image.shape[1] // GRID_PX]
            yield r, c, y, x, crop.astype(float)


def test_heat_cells_blend_the_crop_with_the_metric_colour_at_the_views_opacity(lens, images):
    assert OPACITY == 0.62  # js/grid.ts's ALPHA
    trace = lens.trace(images[0])
    cls = trace.prediction.index
    picture = _heat_map(snapshot_png(trace, cls, layer=3))
    values = trace.identifiability(cls, "resid")[3, trace.tokens.image_tokens].reshape(trace.tokens.grid)
    for r, c, y, x, crop in _cell_centres(trace):
        expected = (1 - OPACITY) * crop + OPACITY * colour_map(values[r, c], VIRIDIS)
        assert np.abs(picture[y, x] - expected).max() <= 1, (r, c)


def test_diverging_colours_span_the_whole_slice_as_in_the_view(lens, images):
    """scaleFor (js/palette.ts) is symmetric over every row and token of the slice, [CLS] included."""
    trace = lens.trace(images[0])
    cls = trace.prediction.index
    whole = metric_slices(trace, "resid", "logit", [cls])[0]
    bound = float(np.nanmax(np.abs(whole)))
    layer = whole[3, trace.tokens.image_tokens].reshape(trace.tokens.grid)
    assert np.nanmax(np.abs(layer)) < bound / 2  # the layer's own range would colour it quite differently
    picture = _heat_map(snapshot_png(trace, cls, metric="logit", layer=3))
    diverging = HEAT_STOPS["diverging"]
    for r, c, y, x, crop in _cell_centres(trace):
        colour = colour_map((layer[r, c] + bound) / (2 * bound), diverging)
        assert np.abs(picture[y, x] - ((1 - OPACITY) * crop + OPACITY * colour)).max() <= 1, (r, c)


def test_removed_tokens_are_left_unpainted(lens, images):
    """A removed token's value is NaN: the view leaves its cell transparent (js/grid.ts), so the crop shows."""
    removed = lens.tokens.token_at(2, 3)
    trace = lens.trace(images[0], drop_tokens=[removed])
    assert np.isnan(trace.identifiability(trace.prediction.index, "resid")[3, removed])
    picture = _heat_map(snapshot_png(trace, trace.prediction.index, layer=3))
    [(y, x, crop)] = [(y, x, crop) for r, c, y, x, crop in _cell_centres(trace) if (r, c) == (2, 3)]
    assert np.abs(picture[y, x] - crop).max() <= 1


def test_the_layer_marker_is_the_palettes(lens, images):
    trace = lens.trace(images[0])
    lines = vl.plots.trajectory_lines(trace, trace.identifiability(trace.prediction.index, "resid"))
    picture = np.asarray(trajectory_image(range(7), lines, 3, "identifiability"))
    marker = tuple(int(PALETTE_FILE["lines"]["marker"][i : i + 2], 16) for i in (1, 3, 5))
    column = picture[:, 38 + (300 - 10 - 38) * 3 // 6]  # layer 3 of 0..6 between the plot's left and right edges
    on, off = PALETTE_FILE["dashes"]["marker"]
    painted = (column[22 : 200 - 48] == marker).all(axis=1)  # the plot's height, dashed as in the view
    assert painted.mean() == pytest.approx(on / (on + off), abs=0.05)


def test_dashed_lines_follow_the_palettes_pattern_across_corners():
    picture = Image.new("RGB", (100, 40), "white")
    snapshot.polyline(ImageDraw.Draw(picture), [(0, 10), (45, 10), (45, 30), (0, 30)], (0, 0, 0), 1, (6, 3))
    ink = (np.asarray(picture)[..., 0] == 0).sum()
    assert ink == pytest.approx(110 * 6 / 9, abs=4)  # 110 px of path, 6 of every 9 drawn
    solid = Image.new("RGB", (100, 40), "white")
    snapshot.polyline(ImageDraw.Draw(solid), [(0, 10), (45, 10)], (0, 0, 0), 1)
    assert (np.asarray(solid)[10, :46, 0] == 0).all()


def test_the_mean_line_is_dashed_everywhere_it_is_drawn(lens, images):
    trace = lens.trace(images[0])
    lines = vl.plots.trajectory_lines(trace, trace.identifiability(0, "resid"))
    assert {line.label: line.dash for line in lines} == {"[CLS]": None, "image tokens (mean)": (6, 3)}
    figure = vl.plots.trajectories(trace, 0)
    styles = {mark.labels[0]: mark.line_style for mark in figure.marks if mark.labels}
    assert styles["image tokens (mean)"] == "dashed" and styles["[CLS]"] == "solid"


def test_titles_use_the_metric_label(lens, images, monkeypatch):
    monkeypatch.setitem(METRIC_SPECS, "logit", dataclasses.replace(METRIC_SPECS["logit"], label="class logit"))
    titles = []
    draw = snapshot.trajectory_image
    monkeypatch.setattr(snapshot, "trajectory_image", lambda *args: titles.append(args[-1]) or draw(*args))
    trace = lens.trace(images[0])
    snapshot_png(trace, 0, metric="logit")
    assert titles == [f"class logit of {trace.class_names[0]}"]
    assert "(no live kernel): class logit of class" in snapshot.describe(trace, 0, "resid", "logit", 6)


def test_explorer_displays_the_widget_then_a_captioned_png_snapshot(lens, images):
    InteractiveShell.instance()
    explorer = vl.explore(lens, images)
    with capture_output() as captured:
        explorer._ipython_display_()
    widget, shown = captured.outputs
    assert widget.data["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.model_id
    assert "text/html" not in shown.data  # JupyterLab would load MathJax for it, just as the explorer appears
    assert shown.metadata == {SNAPSHOT_METADATA: {"snapshot": True}}
    name = lens.class_names[explorer.cls]
    caption = shown.data["text/plain"]
    assert f"identifiability of class '{name}' in the residual stream at layer 6" in caption
    png = Image.open(io.BytesIO(base64.b64decode(shown.data["image/png"])))
    plain = Image.open(io.BytesIO(explorer.snapshot()))
    assert png.width == plain.width > GRID_PX and png.height > plain.height  # the caption is written below
    assert png.crop((0, 0, *plain.size)).tobytes() == plain.convert(png.mode).tobytes()
    below = np.asarray(png.convert("L"))[plain.height :]
    assert (below < 200).sum() > 500  # text, not a blank strip


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
