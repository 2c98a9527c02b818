"""Class-embedding trajectories as a bqplot figure, for notebooks that build their own plots.

The lines and their colours are the explorer's own (:mod:`vitlens_widgets.widgets.lines`).
"""

from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import numpy as np

from ..engine.trace import ClassLike, Trace, layer_numbers
from ..widgets.lines import LINE_COLOURS, trajectory_lines, value_range
from ..widgets.payload import metric_slices
from ..widgets.specs import METRIC_SPECS, check_metric, site_spec


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
    low, high = value_range(metric, lines)
    label = METRIC_SPECS[metric].label
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
            line_style="dashed" if line.dash else "solid",
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
        bq.Axis(scale=y_scale, orientation="vertical", label=label, tick_format=".2f"),
    ]
    return bq.Figure(
        marks=marks,
        axes=axes,
        title=f"{label} of '{trace.class_names[trace.class_index(cls)]}' across layers",
        legend_location="top-right",
        fig_margin={"top": 30, "bottom": 40, "left": 55, "right": 110},
        layout={"height": "280px", "width": "100%"},
    )
