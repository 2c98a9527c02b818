"""Class-embedding trajectories: a metric of one class across layers, one line per token.

:func:`trajectory_lines` says which lines there are and in which colour (the same
as the explorer's view and snapshot, from one palette); :func:`trajectories`
draws them as a bqplot figure for notebooks that build their own plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bqplot as bq
import numpy as np

from ..engine.trace import ClassLike, Trace, layer_numbers
from ..widgets.payload import metric_slices
from ..widgets.specs import PALETTE, check_metric, site_spec

LINE_COLOURS = PALETTE["lines"]


@dataclass(frozen=True)
class Line:
    """One trajectory: ``token`` is a token index, or -1 for the mean of the image tokens."""

    token: int
    label: str
    colour: str
    values: np.ndarray  # [rows]


def token_colour(position: int) -> str:
    """The colour of the ``position``-th selected token (the grid outlines it in the same colour)."""
    colours = LINE_COLOURS["tokens"]
    return colours[position % len(colours)]


def trajectory_lines(trace: Trace, values: np.ndarray, tokens: Sequence[int] = ()) -> list[Line]:
    """[CLS] (when the model has it), the mean of the image tokens, then ``tokens`` in order, from ``values [rows, T]``."""
    lines = []
    if "cls" in trace.tokens.prefix:
        cls_token = trace.tokens.prefix.index("cls")
        lines.append(Line(cls_token, "[CLS]", LINE_COLOURS["cls"], values[:, cls_token]))
    image = values[:, trace.tokens.image_tokens]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(image, axis=1) if np.isfinite(image).any() else np.full(len(values), np.nan)
    lines.append(Line(-1, "image tokens (mean)", LINE_COLOURS["mean"], mean))
    for i, token in enumerate(tokens):
        lines.append(Line(int(token), trace.tokens.names[token], token_colour(i), values[:, token]))
    return lines


def trajectories(
    trace: Trace,
    cls: ClassLike,
    tokens: Sequence[int] = (),
    site: str = "resid",
    metric: str = "identifiability",
    layer: int | None = None,
) -> bq.Figure:
    """A bqplot figure of ``metric`` of class ``cls`` across the layers of ``site``: [CLS], the mean image token
    and each of ``tokens``; a dashed marker at ``layer`` when given.

    Example:
        >>> vl.plots.trajectories(lens.trace(image), "star", tokens=[29, 30], site="mlp")
    """
    check_metric(metric)
    spec = site_spec(site)
    values = metric_slices(trace, site, metric, [trace.class_index(cls)])[0]
    x = np.asarray(layer_numbers(site, trace.depth), dtype=float)
    lines = trajectory_lines(trace, values, [trace.tokens.check_token(t) for t in tokens])
    low, high = (0.0, 1.0) if metric != "logit" else (float(np.nanmin(values)), float(np.nanmax(values)))
    x_scale, y_scale = bq.LinearScale(min=float(x[0]), max=float(x[-1])), bq.LinearScale(min=low, max=high)
    scales = {"x": x_scale, "y": y_scale}
    marks = [
        bq.Lines(
            x=x,
            y=line.values.astype(float),
            scales=scales,
            colors=[line.colour],
            labels=[line.label],
            display_legend=True,
            line_style="dash_dotted" if line.token == -1 else "solid",
            stroke_width=2.5,
        )
        for line in lines
    ]
    if layer is not None:
        spec.check_layer(layer, trace.depth)
        marks.append(
            bq.Lines(
                x=[layer, layer], y=[low, high], scales=scales, colors=[LINE_COLOURS["marker"]], line_style="dashed"
            )
        )
    axes = [
        bq.Axis(scale=x_scale, label=f"layer ({spec.label})", tick_format="d", tick_values=x, grid_lines="none"),
        bq.Axis(scale=y_scale, orientation="vertical", label=metric, tick_format=".2f"),
    ]
    return bq.Figure(
        marks=marks,
        axes=axes,
        title=f"{metric} of '{trace.class_names[trace.class_index(cls)]}' across layers",
        legend_location="top-right",
        fig_margin={"top": 30, "bottom": 40, "left": 55, "right": 110},
        layout={"height": "280px", "width": "100%"},
    )
