"""Which trajectory lines the explorer draws, and in which colour: one definition for the
snapshot PNG and the ``vl.plots.trajectories`` figure (the view reads the same palette).

Kept apart from the bqplot figure so that drawing a snapshot, as every opened explorer
does, never imports bqplot (and pandas and pyarrow behind it: 65 MiB and 0.7 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.trace import Trace
from .specs import METRIC_SPECS, PALETTE

LINE_COLOURS = PALETTE["lines"]
LINE_DASHES: dict[str, tuple[float, float]] = {name: tuple(dash) for name, dash in PALETTE["dashes"].items()}


@dataclass(frozen=True)
class Line:
    """One trajectory: ``token`` is a token index, or -1 for the mean of the image tokens."""

    token: int
    label: str
    colour: str
    values: np.ndarray  # [rows]
    dash: tuple[float, float] | None = None  # (on, off) in pixels, from the palette; None: solid


def token_colour(position: int) -> str:
    """The colour of the ``position``-th selected token (the grid outlines it in the same colour)."""
    colours = LINE_COLOURS["tokens"]
    return colours[position % len(colours)]


def trajectory_lines(trace: Trace, values: np.ndarray, tokens: Sequence[int] = ()) -> list[Line]:
    """[CLS] (when the model has it), the mean of the image tokens, then ``tokens`` in order, from ``values [rows, T]``.

    Example:
        >>> lines = trajectory_lines(trace, trace.identifiability("star"), tokens=[29])
        >>> [line.label for line in lines], lines[0].colour  # the explorer's labels and palette
    """
    lines = []
    if "cls" in trace.tokens.prefix:
        cls_token = trace.tokens.prefix.index("cls")
        lines.append(Line(cls_token, "[CLS]", LINE_COLOURS["cls"], values[:, cls_token]))
    image = values[:, trace.tokens.image_tokens]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(image, axis=1) if np.isfinite(image).any() else np.full(len(values), np.nan)
    lines.append(Line(-1, "image tokens (mean)", LINE_COLOURS["mean"], mean, LINE_DASHES["mean"]))
    for i, token in enumerate(tokens):
        lines.append(Line(int(token), trace.tokens.names[token], token_colour(i), values[:, token]))
    return lines


def value_range(metric: str, lines: Sequence[Line]) -> tuple[float, float]:
    """The y range of a trajectory chart: the metric's own, else the finite values of ``lines``
    (as the view's ``finiteRange``: a flat line spans 1, no finite value gives ``(0, 1)``)."""
    fixed = METRIC_SPECS[metric].value_range
    if fixed is not None:
        return float(fixed[0]), float(fixed[1])
    values = np.concatenate([line.values for line in lines]) if lines else np.empty(0)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return low, high if high > low else low + 1.0
