"""Class-embedding trajectories: a metric of one class across layers, one line per token (bqplot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import bqplot as bq
import numpy as np

# Colours: [CLS], mean of image tokens, then selected tokens (Tableau 10, colour-blind friendly order).
CLS_COLOUR = "#1f77b4"
MEAN_COLOUR = "#7f7f7f"
TOKEN_COLOURS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
METRIC_RANGES = {"identifiability": (0.0, 1.0), "probability": (0.0, 1.0)}


def token_colour(position: int) -> str:
    """The colour of the ``position``-th selected token (shared with the grid's outline colours)."""
    return TOKEN_COLOURS[position % len(TOKEN_COLOURS)]


class TrajectoryFigure:
    """A bqplot figure of ``metric`` across layers for [CLS], the mean image token and selected tokens.

    ``on_layer`` is called with a layer when the user clicks the plot;
    ``on_hover_token`` with the token whose line the pointer is over (-1 for the mean).
    """

    def __init__(
        self,
        on_layer: Callable[[int], None] | None = None,
        on_hover_token: Callable[[int], None] | None = None,
        height: str = "260px",
    ):
        self.x_scale = bq.LinearScale()
        self.y_scale = bq.LinearScale(min=0.0, max=1.0)
        self.x_axis = bq.Axis(scale=self.x_scale, label="layer", tick_format="d", grid_lines="none")
        self.y_axis = bq.Axis(scale=self.y_scale, orientation="vertical", label="identifiability", tick_format=".2f")
        self.marker = bq.Lines(
            x=[0, 0], y=[0, 1], scales={"x": self.x_scale, "y": self.y_scale}, colors=["#999999"], line_style="dashed"
        )
        self.selector = bq.interacts.IndexSelector(scale=self.x_scale, marks=[self.marker], line_width=0)
        self.figure = bq.Figure(
            marks=[self.marker],
            axes=[self.x_axis, self.y_axis],
            interaction=self.selector,
            fig_margin={"top": 20, "bottom": 40, "left": 55, "right": 110},
            layout={"height": height, "width": "100%"},
            legend_location="top-right",
            title="",
        )
        self._on_layer = on_layer
        self._on_hover_token = on_hover_token
        self._tokens: list[int] = []
        self.selector.observe(self._clicked, names="selected")

    def update(
        self,
        layers: Sequence[int],
        values: np.ndarray,
        n_prefix: int,
        has_cls: bool,
        selected: Sequence[int],
        token_names: Sequence[str],
        metric: str,
        class_name: str,
    ) -> None:
        """Redraw the lines from ``values`` (``[rows, T]``, rows aligned with ``layers``)."""
        x = np.asarray(layers, dtype=float)
        series: list[tuple[int, str, str, np.ndarray]] = []
        if has_cls:
            series.append((0, "[CLS]", CLS_COLOUR, values[:, 0]))
        series.append((-1, "image tokens (mean)", MEAN_COLOUR, values[:, n_prefix:].mean(axis=1)))
        for i, token in enumerate(selected):
            series.append((token, token_names[token], token_colour(i), values[:, token]))
        marks = [self._line(x, y, label, colour, token) for token, label, colour, y in series]
        self._tokens = [s[0] for s in series]
        low, high = METRIC_RANGES.get(metric, (float(values.min()), float(values.max())))
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = low, high if high > low else low + 1.0
        self.x_scale.min, self.x_scale.max = float(x[0]), float(x[-1])
        self.x_axis.tick_values = x
        self.y_axis.label = metric
        self.figure.title = f"{metric} of '{class_name}' across layers"
        self.marker.y = [low, high]
        self.figure.marks = [*marks, self.marker]

    def set_layer(self, layer: int) -> None:
        self.marker.x = [layer, layer]
        if list(self.selector.selected if self.selector.selected is not None else []) != [layer]:
            self.selector.selected = np.array([float(layer)])

    def _line(self, x: np.ndarray, y: np.ndarray, label: str, colour: str, token: int) -> bq.Lines:
        line = bq.Lines(
            x=x,
            y=np.asarray(y, dtype=float),
            scales={"x": self.x_scale, "y": self.y_scale},
            colors=[colour],
            labels=[label],
            display_legend=True,
            marker="circle",
            marker_size=24,
            stroke_width=2.5 if token >= 0 else 2.0,
            line_style="solid" if token != -1 else "dash_dotted",
            interactions={"hover": "tooltip"},
            tooltip=bq.Tooltip(fields=["x", "y"], labels=["layer", label], formats=["d", ".3f"]),
        )
        if self._on_hover_token is not None:
            line.on_hover(lambda _mark, _event, t=token: self._on_hover_token(t))
        return line

    def _clicked(self, change: dict) -> None:
        selected = change["new"]
        if self._on_layer is None or selected is None or len(selected) == 0:
            return
        lo, hi = self.x_scale.min, self.x_scale.max
        layer = round(float(selected[0]))
        if lo is not None and hi is not None:
            layer = int(min(max(layer, lo), hi))
        self._on_layer(layer)
