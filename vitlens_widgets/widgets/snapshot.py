"""A static picture of the explorer, for places with no kernel and no widget manager.

A saved notebook viewed on GitHub, on nbviewer or as an HTML export has no
kernel; the live widget then shows nothing. The explorer therefore displays this
snapshot beside itself: a PNG of the token heat map and the trajectories of the
state it opened with. Live JupyterLab hides it (see ``explorer.css``).
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..engine.trace import Trace, layer_numbers, layer_row
from .lines import LINE_COLOURS, LINE_DASHES, Line, trajectory_lines, value_range
from .payload import metric_slices
from .specs import METRIC_SPECS, PALETTE, SITE_SPECS

# The view's colour stops, line colours and heat opacity (js/palette.ts reads the same file), so the picture
# matches the widget.
HEAT_STOPS = {name: np.array(stops, dtype=np.float32) for name, stops in PALETTE["heat"].items()}
HEAT_OPACITY = float(PALETTE["heat_opacity"])
GRID_PX = 256  # side of the heat map in the picture
PLOT_W, PLOT_H = 300, 200
SNAPSHOT_METADATA = "vitlens_widgets"  # the output metadata key that marks a snapshot


def colour_map(values: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` colours of ``values`` in [0, 1] (NaN → 0), linear between ``stops``."""
    x = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(np.floor(x).astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return np.round(stops[i] + (stops[i + 1] - stops[i]) * f).astype(np.uint8)


def colour_range(metric: str, values: np.ndarray) -> tuple[float, float]:
    """The metric's fixed range, or one symmetric around 0 over every finite value of ``values``.

    Pass the whole slice (``[rows, T]``, [CLS] included): the view's ``scaleFor`` (js/palette.ts) does, so a
    layer's colours compare across layers.
    """
    fixed = METRIC_SPECS[metric].value_range
    if fixed is not None:
        return float(fixed[0]), float(fixed[1])
    finite = np.abs(values[np.isfinite(values)])
    bound = float(finite.max()) if finite.size else 0.0
    bound = bound or 1.0
    return -bound, bound


def heat_cells(values: np.ndarray, metric: str, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 colours ``[h, w, 3]`` of patch ``values [h, w]`` and their opacity ``[h, w]`` (0: NaN, left unpainted)."""
    low, high = bounds
    colours = colour_map((values - low) / (high - low if high > low else 1.0), HEAT_STOPS[METRIC_SPECS[metric].scale])
    return colours, np.where(np.isfinite(values), HEAT_OPACITY, 0.0).astype(np.float32)


def heatmap_image(
    trace: Trace, values: np.ndarray, metric: str, size: int = GRID_PX, bounds: tuple[float, float] | None = None
) -> Image.Image:
    """The input crop with one translucent cell per patch coloured by ``values`` (``[T]`` for one layer).

    ``bounds`` map values to colours (default: :func:`colour_range` of ``values``).
    """
    h, w = trace.tokens.grid
    colours, opacity = heat_cells(
        values[trace.tokens.image_tokens].reshape(h, w), metric, bounds or colour_range(metric, values)
    )
    cells = np.asarray(Image.fromarray(colours).resize((size, size), Image.Resampling.NEAREST), dtype=np.float32)
    alpha = np.asarray(Image.fromarray(opacity).resize((size, size), Image.Resampling.NEAREST))[..., None]
    resample = Image.Resampling.NEAREST if trace.image.shape[0] < size else Image.Resampling.BILINEAR
    crop = np.asarray(Image.fromarray(trace.image).convert("RGB").resize((size, size), resample), dtype=np.float32)
    picture = Image.fromarray(np.round(crop * (1 - alpha) + cells * alpha).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for k in range(1, w):
        draw.line([(k * size / w, 0), (k * size / w, size)], fill=(255, 255, 255), width=1)
    for k in range(1, h):
        draw.line([(0, k * size / h), (size, k * size / h)], fill=(255, 255, 255), width=1)
    return picture


def trajectory_image(
    layers: Sequence[int], lines: Sequence[Line], current: int, metric: str, title: str = ""
) -> Image.Image:
    """A small line chart: one line per :class:`Line` over ``layers``, a marker at ``current``."""
    font = ImageFont.load_default(size=11)
    picture = Image.new("RGB", (PLOT_W, PLOT_H), "white")
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = 38, 22, PLOT_W - 10, PLOT_H - 48
    lo, hi = value_range(metric, lines)

    def xy(layer: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (layer - layers[0]) / max(1, layers[-1] - layers[0])
        return x, bottom - (bottom - top) * (value - lo) / (hi - lo)

    draw.text((left, 4), title[:48], fill=(40, 40, 40), font=font)
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    marker_x = xy(current, lo)[0]
    polyline(draw, [(marker_x, top), (marker_x, bottom)], _rgb(LINE_COLOURS["marker"]), 1, LINE_DASHES["marker"])
    for value in (lo, hi):
        draw.text((2, xy(layers[0], value)[1] - 6), f"{value:.2g}", fill=(80, 80, 80), font=font)
    draw.text((left, bottom + 3), f"layer {layers[0]}", fill=(80, 80, 80), font=font)
    draw.text((right - 40, bottom + 3), f"layer {layers[-1]}", fill=(80, 80, 80), font=font)
    for n, line in enumerate(lines):
        colour, name = _rgb(line.colour), line.label
        points = [xy(layer, float(v)) for layer, v in zip(layers, line.values) if np.isfinite(v)]
        if len(points) > 1:
            polyline(draw, points, colour, 2, line.dash)
        legend_x = left + (n % 3) * 85
        legend_y = bottom + 17 + (n // 3) * 13
        polyline(draw, [(legend_x, legend_y + 6), (legend_x + 14, legend_y + 6)], colour, 2, line.dash)
        draw.text((legend_x + 18, legend_y), name[:12], fill=(40, 40, 40), font=font)
    return picture


def polyline(
    draw: ImageDraw.ImageDraw,
    points: Sequence[tuple[float, float]],
    fill: tuple[int, int, int],
    width: int,
    dash: tuple[float, float] | None = None,
) -> None:
    """A polyline, solid, or dashed ``(on, off)`` pixels along its whole length as SVG's ``stroke-dasharray``."""
    if dash is None:
        draw.line(list(points), fill=fill, width=width)
        return
    on, off = dash
    walked = 0.0  # length drawn before this segment: the pattern runs on across corners
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while t < length:
            phase = (walked + t) % (on + off)
            step = min((on - phase) if phase < on else (on + off - phase), length - t)
            if phase < on:
                a, b = t / length, (t + max(step - 1, 0)) / length  # PIL paints both ends: `on` pixels in all
                draw.line(
                    [(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)],
                    fill=fill,
                    width=width,
                )
            t += step
        walked += length


def snapshot_png(
    trace: Trace,
    cls: int,
    site: str = "resid",
    metric: str = "identifiability",
    layer: int | None = None,
    selected: Sequence[int] = (),
    caption: str = "",
) -> bytes:
    """PNG bytes: the token heat map of ``cls`` at ``layer`` beside its trajectories across layers.

    A ``caption`` is written below the picture.

    Example:
        >>> png = snapshot_png(lens.trace(image), cls=3)
    """
    values = metric_slices(trace, site, metric, [cls])[0]  # [rows, T]
    layers = list(layer_numbers(site, trace.depth))
    layer = layers[-1] if layer is None else layer
    row = values[layer_row(site, layer, trace.depth)]
    grid = heatmap_image(trace, row, metric, bounds=colour_range(metric, values))
    lines = trajectory_lines(trace, values, selected)
    plot = trajectory_image(layers, lines, layer, metric, f"{METRIC_SPECS[metric].label} of {trace.class_names[cls]}")
    picture = Image.new("RGB", (GRID_PX + PLOT_W + 12, max(GRID_PX, PLOT_H)), "white")
    picture.paste(grid, (0, 0))
    picture.paste(plot, (GRID_PX + 12, (GRID_PX - PLOT_H) // 2))
    if caption:
        picture = with_caption(picture, caption)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")  # not optimize=True: 3% smaller for 6x the time (40 ms, in the first paint)
    return buffer.getvalue()


def with_caption(picture: Image.Image, caption: str) -> Image.Image:
    """``picture`` with ``caption`` below it, wrapped to its width."""
    font = ImageFont.load_default(size=12)
    lines: list[str] = []
    for word in caption.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= picture.width - 8:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    line_height = 16
    framed = Image.new("RGB", (picture.width, picture.height + 8 + line_height * len(lines)), "white")
    framed.paste(picture, (0, 0))
    draw = ImageDraw.Draw(framed)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 6 + i * line_height), line, fill=(85, 85, 85), font=font)
    return framed


def snapshot_output(png: bytes, caption: str) -> tuple[dict[str, str], dict[str, dict]]:
    """The notebook output of a snapshot: ``(data, metadata)`` for ``display(..., raw=True)``.

    An ``image/png``, not HTML: JupyterLab loads its LaTeX typesetter (MathJax, about 70 ms of script) for the
    first HTML output a page shows, and would do so just as the explorer appears, delaying its first answers.
    The metadata marks it for tools and tests; the live view's stylesheet hides the image after the widget.
    """
    data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": caption}
    return data, {SNAPSHOT_METADATA: {"snapshot": True}}


def describe(trace: Trace, cls: int, site: str, metric: str, layer: int) -> str:
    """One line saying what a snapshot shows."""
    return (
        f"Static snapshot of the explorer (no live kernel): {METRIC_SPECS[metric].label} of class "
        f"'{trace.class_names[cls]}' in the {SITE_SPECS[site].label} at layer {layer}. "
        "Run the notebook to explore interactively."
    )


def _rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` → an RGB tuple for PIL."""
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
