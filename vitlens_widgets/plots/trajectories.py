"""Class-embedding trajectories: a metric of one class across layers, one line per token (bqplot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import bqplot as bq
import numpy as np

# Colours: [CLS], mean of image tokens, then selected tokens (Tableau 10, colour-blind friendly order).
CLS_COLOUR = "#1f77b4"
MEAN_COLOUR = "#7f7f7f"
TOKEN_COLOURS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
BASELINE = -2  # pseudo-token of the unperturbed comparison lines
METRIC_RANGES = {"identifiability": (0.0, 1.0), "probability": (0.0, 1.0)}


def token_colour(position: int) -> str:
    """The colour of the ``position``-th selected token (shared with the grid's outline colours)."""
    return TOKEN_COLOURS[position % len(TOKEN_COLOURS)]


class TrajectoryFigure:
    """A bqplot figure of ``metric`` across layers for [CLS], the mean image token and selected tokens.

    ``on_layer`` is called with a layer when the user clicks the plot;
    ``on_hover_token`` with the token whose line the pointer is over (-1 for the mean).

    Example:
        >>> plot = TrajectoryFigure(on_layer=print)
        >>> plot.update(trace.layers("resid"), trace.identifiability("star"), n_prefix=1, has_cls=True, selected=[29],
        ...             token_names=trace.tokens.names, metric="identifiability", class_name="star")
        >>> plot.figure  # the bqplot figure to display
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
        self._pool: list[bq.Lines] = []
        self._line_token: dict[str, int] = {}
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
        baseline: np.ndarray | None = None,
    ) -> None:
        """Redraw the lines from ``values`` (``[rows, T]``, rows aligned with ``layers``).

        ``baseline``: the same slice of the unperturbed model, drawn dotted for [CLS] and the mean.
        """
        x = np.asarray(layers, dtype=float)
        series: list[tuple[int, str, str, np.ndarray]] = []
        if has_cls:
            series.append((0, "[CLS]", CLS_COLOUR, values[:, 0]))
        series.append((-1, "image tokens (mean)", MEAN_COLOUR, np.nanmean(values[:, n_prefix:], axis=1)))
        for i, token in enumerate(selected):
            series.append((token, token_names[token], token_colour(i), values[:, token]))
        if baseline is not None:
            if has_cls:
                series.append((BASELINE, "[CLS] unperturbed", CLS_COLOUR, baseline[:, 0]))
            series.append(
                (BASELINE, "image tokens unperturbed", MEAN_COLOUR, np.nanmean(baseline[:, n_prefix:], axis=1))
            )
        while len(self._pool) < len(series):
            self._pool.append(self._new_line())
        marks = self._pool[: len(series)]
        for mark, (token, label, colour, y) in zip(marks, series):
            self._style(mark, x, np.asarray(y, dtype=float), label, colour, token)
        self._tokens = [s[0] for s in series]
        low, high = METRIC_RANGES.get(metric, (float(np.nanmin(values)), float(np.nanmax(values))))
        high = high if high > low else low + 1.0
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = low, high
        with self.x_scale.hold_sync():
            self.x_scale.min, self.x_scale.max = float(x[0]), float(x[-1])
        self.x_axis.tick_values = x
        self.y_axis.label = metric
        self.figure.title = f"{metric} of '{class_name}' across layers"
        self.marker.y = [low, high]
        if list(self.figure.marks) != [*marks, self.marker]:
            self.figure.marks = [*marks, self.marker]

    def set_layer(self, layer: int) -> None:
        self.marker.x = [layer, layer]
        if list(self.selector.selected if self.selector.selected is not None else []) != [layer]:
            self.selector.selected = np.array([float(layer)])

    def _new_line(self) -> bq.Lines:
        """A line mark, reused across redraws (creating widgets on every change would flood the comm)."""
        line = bq.Lines(
            x=[0.0],
            y=[0.0],
            scales={"x": self.x_scale, "y": self.y_scale},
            display_legend=True,
            marker="circle",
            marker_size=24,
            interactions={"hover": "tooltip"},
            tooltip=bq.Tooltip(fields=["x", "y"], labels=["layer", ""], formats=["d", ".3f"]),
        )
        if self._on_hover_token is not None:
            line.on_hover(lambda mark, _event: self._on_hover_token(self._line_token.get(mark.model_id, -1)))
        return line

    def _style(self, line: bq.Lines, x: np.ndarray, y: np.ndarray, label: str, colour: str, token: int) -> None:
        self._line_token[line.model_id] = token
        with line.hold_sync():
            line.x, line.y = x, y
            line.colors, line.labels = [colour], [label]
            line.stroke_width = 2.5 if token >= 0 else 2.0
            line.line_style = {-1: "dash_dotted", BASELINE: "dotted"}.get(token, "solid")
            line.opacities = [0.6 if token == BASELINE else 1.0]
            line.tooltip.labels = ["layer", label]

    def _clicked(self, change: dict) -> None:
        selected = change["new"]
        if self._on_layer is None or selected is None or len(selected) == 0:
            return
        lo, hi = self.x_scale.min, self.x_scale.max
        layer = round(float(selected[0]))
        if lo is not None and hi is not None:
            layer = int(min(max(layer, lo), hi))
        self._on_layer(layer)
