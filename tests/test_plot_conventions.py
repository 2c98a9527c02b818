"""The bqplot figures read the explorer's conventions: metric descriptors (range, label) and the palette."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import vitlens_widgets as vl
from vitlens_widgets.widgets.specs import METRIC_SPECS, PALETTE

LINES = PALETTE["lines"]


@pytest.fixture(scope="module")
def trace() -> vl.Trace:
    return vl.Lens.demo().trace(vl.data.shapes(1, seed=2).images[0])


def test_trajectories_take_a_fixed_range_and_label_from_the_metric(trace, monkeypatch):
    spec = dataclasses.replace(METRIC_SPECS["probability"], label="class probability", value_range=(0.0, 0.5))
    monkeypatch.setitem(METRIC_SPECS, "probability", spec)
    figure = vl.plots.trajectories(trace, 0, metric="probability", layer=3)
    y_scale = figure.axes[1].scale
    assert (y_scale.min, y_scale.max) == (0.0, 0.5)
    assert list(figure.marks[-1].y) == [0.0, 0.5]  # the layer marker spans the range
    assert figure.axes[1].label == "class probability"
    assert figure.title.startswith("class probability of ")


def test_trajectories_without_a_fixed_range_span_the_lines_drawn(trace):
    """As the view (``finiteRange`` in js/explorer.ts): the lines shown, not every token of the slice."""
    figure = vl.plots.trajectories(trace, 0, tokens=[9], metric="logit")
    drawn = np.concatenate([mark.y for mark in figure.marks])
    y_scale = figure.axes[1].scale
    assert (y_scale.min, y_scale.max) == (pytest.approx(np.nanmin(drawn)), pytest.approx(np.nanmax(drawn)))
    every_token = trace.logits("resid")[..., 0]
    assert np.nanmin(every_token) < y_scale.min  # so the old range (the whole slice) differs


def test_value_range_of_flat_and_empty_lines():
    from vitlens_widgets.widgets.lines import Line, value_range

    flat = [Line(0, "a", "#000000", np.array([2.0, 2.0, np.nan]))]
    assert value_range("logit", flat) == (2.0, 3.0)
    assert value_range("logit", [Line(0, "a", "#000000", np.array([np.nan]))]) == (0.0, 1.0)
    assert value_range("identifiability", flat) == (0.0, 1.0)


def test_analysis_figures_draw_cls_mean_and_baselines_in_the_palettes_colours():
    layers = [0, 1, 2]
    df = pd.DataFrame(
        {
            "layer": layers * 2,
            "tokens": ["cls"] * 3 + ["image"] * 3,
            "identifiability": [0.5, 0.7, 0.9, 0.5, 0.6, 0.8],
            "random_identifiability": [0.5, 0.5, 0.5, 0.5, 0.51, 0.49],
        }
    )
    figure = vl.plots.random_init_figure(df)
    colours = [mark.colors[0] for mark in figure.marks]
    assert colours == [LINES["cls"], LINES["baseline"], LINES["mean"], LINES["baseline"]]
    assert [mark.line_style for mark in figure.marks] == ["solid", "dashed", "solid", "dashed"]
    assert figure.marks[1].marker != figure.marks[3].marker  # two baselines told apart
    np.testing.assert_allclose(figure.marks[3].y, [0.5, 0.51, 0.49])
