"""bqplot figures of the dataset analyses, built from their DataFrames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import bqplot as bq
import pandas as pd

from ..widgets.lines import LINE_COLOURS

# [CLS] and the image tokens (their mean) in the explorer's colours. Object and context tokens are groups the
# explorer does not draw: their own colours (they equal the first two selected-token colours only by chance).
GROUP_COLOURS = {"cls": LINE_COLOURS["cls"], "image": LINE_COLOURS["mean"], "object": "#ff7f0e", "context": "#2ca02c"}
# Categorical colours of measures, perturbations, methods and models: no counterpart in the explorer.
MEASURE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
# A reference line (random init, unperturbed) is drawn as the explorer draws its unperturbed lines: the palette's
# baseline colour, dashed; where a figure has several, their markers tell them apart.
BASELINE_MARKERS = ("circle", "square", "diamond", "triangle-up")


class Series(NamedTuple):
    """One line of a figure: ``x`` defaults to the figure's ``x``; ``dashed`` for a reference line."""

    label: str
    colour: str
    y: list
    x: list | None = None
    dashed: bool = False
    marker: str = "circle"


def baseline(label: str, y: list, n: int = 0) -> Series:
    """The ``n``-th reference line of a figure, in the palette's baseline colour, dashed."""
    return Series(label, LINE_COLOURS["baseline"], y, dashed=True, marker=BASELINE_MARKERS[n % len(BASELINE_MARKERS)])


def _lines_figure(
    x: Sequence[float],
    series: list[Series],
    x_label: str,
    y_label: str,
    title: str,
    y_range: tuple[float, float] | None = (0.0, 1.0),
    x_format: str = "d",
) -> bq.Figure:
    x_scale = bq.LinearScale()
    y_scale = bq.LinearScale(min=y_range[0], max=y_range[1]) if y_range else bq.LinearScale()
    marks = [
        bq.Lines(
            x=list(line.x) if line.x is not None else list(x),
            y=list(line.y),
            scales={"x": x_scale, "y": y_scale},
            colors=[line.colour],
            labels=[line.label],
            display_legend=True,
            line_style="dashed" if line.dashed else "solid",
            marker=line.marker,
            marker_size=24,
        )
        for line in series
    ]
    axes = [
        bq.Axis(scale=x_scale, label=x_label, tick_format=x_format, tick_values=list(x)),
        bq.Axis(scale=y_scale, orientation="vertical", label=y_label, tick_format=".2f"),
    ]
    return bq.Figure(marks=marks, axes=axes, title=title, legend_location="top-left", layout={"height": "320px"})


def identifiability_figure(df: pd.DataFrame, value: str = "identifiability") -> bq.Figure:
    """Identifiability (or ``value="top1_rate"``) across layers, one line per token group.

    ``df`` comes from :func:`vitlens_widgets.analysis.identifiability_by_block`.

    Example:
        >>> identifiability_figure(vl.analysis.identifiability_by_block(lens, vl.data.shapes(200, seed=2)))
    """
    layers = sorted(df.layer.unique())
    series = []
    for group in [g for g in GROUP_COLOURS if g in set(df.tokens)]:
        rows = df[df.tokens == group].set_index("layer").reindex(layers)
        series.append(Series(group, GROUP_COLOURS[group], rows[value].tolist()))
    site = df.site.iloc[0] if "site" in df else "resid"
    return _lines_figure(layers, series, "layer", value, f"{value} of the true class ({site})")


def sublayer_figure(df: pd.DataFrame, tokens: str = "image") -> bq.Figure:
    """The sublayer measures across blocks for one token group (from :func:`sublayer_contributions`).

    Example:
        >>> sublayer_figure(vl.analysis.sublayer_contributions(lens, vl.data.shapes(200, seed=2)), tokens="cls")
    """
    from ..analysis.sublayers import MEASURES

    rows = df[df.tokens == tokens].sort_values("block")
    if rows.empty:
        raise ValueError(f"no rows for token group {tokens!r}; available: {sorted(set(df.tokens))}")
    series = [Series(m, MEASURE_COLOURS[i], rows[m].tolist()) for i, m in enumerate(MEASURES)]
    return _lines_figure(
        rows.block.tolist(), series, "block", "share of tokens", f"what the sublayers add ({tokens} tokens)"
    )


def perturbation_figure(df: pd.DataFrame, tokens: str = "image") -> bq.Figure:
    """Change in identifiability against the unperturbed model, one line per perturbation.

    ``df`` comes from :func:`vitlens_widgets.analysis.perturbation_effects`.

    Example:
        >>> perturbation_figure(vl.analysis.perturbation_effects(lens, vl.data.shapes(200, seed=2)), tokens="image")
    """
    rows = df[df.tokens == tokens]
    layers = sorted(rows.layer.unique())
    series = []
    for i, (name, part) in enumerate(rows.groupby("perturbation", sort=False)):
        series.append(Series(name, _colour(i), part.set_index("layer").reindex(layers).change.tolist()))
    return _lines_figure(layers, series, "layer", "change in identifiability", f"perturbations ({tokens} tokens)", None)


def memory_agreement_figure(df: pd.DataFrame) -> bq.Figure:
    """Class-value agreement across blocks, trained vs random init, per memory kind.

    ``df`` comes from :func:`vitlens_widgets.analysis.class_value_agreement` (one or both kinds, concatenated).

    Example:
        >>> df = pd.concat([vl.analysis.class_value_agreement(lens, kind=kind) for kind in ("mlp", "attn")])
        >>> memory_agreement_figure(df)
    """
    blocks = sorted(df.block.unique())
    series = []
    for i, (kind, part) in enumerate(df.groupby("kind", sort=False)):
        rows = part.set_index("block").reindex(blocks)
        series.append(Series(f"{kind} (trained)", _colour(i), rows.trained.tolist()))
        series.append(baseline(f"{kind} (random init)", rows.random.tolist(), i))
    return _lines_figure(blocks, series, "block", "best cosine per class (mean)", "class-value agreement")


def _colour(i: int) -> str:
    return MEASURE_COLOURS[i % len(MEASURE_COLOURS)]


def random_init_figure(df: pd.DataFrame, value: str = "identifiability") -> bq.Figure:
    """Trained vs random-init copy across layers, for [CLS] and image tokens (``value``: or ``top1_rate``).

    ``df`` comes from :func:`vitlens_widgets.analysis.identifiability_vs_random`.

    Example:
        >>> random_init_figure(vl.analysis.identifiability_vs_random(lens, vl.data.shapes(200, seed=2)))
    """
    layers = sorted(df.layer.unique())
    series = []
    for i, group in enumerate(("cls", "image")):
        rows = df[df.tokens == group].set_index("layer").reindex(layers)
        series.append(Series(f"{group} (trained)", GROUP_COLOURS[group], rows[value].tolist()))
        series.append(baseline(f"{group} (random init)", rows[f"random_{value}"].tolist(), i))
    return _lines_figure(layers, series, "layer", value, f"{value}: trained vs random init")


def location_gain_figure(df: pd.DataFrame) -> bq.Figure:
    """Share of object vs context tokens whose sublayer update raises the true class, per block.

    ``df`` comes from :func:`vitlens_widgets.analysis.sublayer_gain_by_location` (one or both kinds).

    Example:
        >>> location_gain_figure(vl.analysis.sublayer_gain_by_location(lens, vl.data.shapes(200, seed=2)))
    """
    blocks = sorted(df.block.unique())
    series = []
    for kind, part in df.groupby("kind", sort=False):
        rows = part.set_index("block").reindex(blocks)
        for group in ("object", "context"):
            series.append(Series(f"{kind}: {group}", GROUP_COLOURS[group], rows[group].tolist()))
    return _lines_figure(blocks, series, "block", "share of tokens gaining", "sublayer gain rate, object vs context")


def context_removal_figure(df: pd.DataFrame) -> bq.Figure:
    """Top-1 rate of the remaining tokens across layers, with and without the removal, per removal.

    ``df`` comes from :func:`vitlens_widgets.analysis.context_removal`.

    Example:
        >>> context_removal_figure(vl.analysis.context_removal(lens, vl.data.shapes(200, seed=2)))
    """
    layers = sorted(df.layer.unique())
    series = []
    for i, (removed, part) in enumerate(df.groupby("removed", sort=False)):
        rows = part.set_index("layer").reindex(layers)
        kept = rows.kept.iloc[0]
        series.append(Series(f"{kept}, {removed} removed", GROUP_COLOURS[kept], rows.top1_rate.tolist()))
        series.append(baseline(f"{kept}, unperturbed", rows.baseline_top1_rate.tolist(), i))
    return _lines_figure(layers, series, "layer", "top-1 rate of the remaining tokens", "context removal")


def removal_curves_figure(curves: pd.DataFrame, direction: str = "negative") -> bq.Figure:
    """Accuracy as image tokens are removed, one line per method (perturbation curves, not only their AUC).

    ``curves`` comes from :func:`vitlens_widgets.analysis.probe_ranked_removal` or
    :func:`vitlens_widgets.explain.evaluate.evaluate_relevance` (columns ``method, direction, fraction, accuracy``).

    Example:
        >>> curves, _ = vl.analysis.probe_ranked_removal(lens, vl.data.shapes(100, seed=5), vl.data.shapes(100, seed=2))
        >>> removal_curves_figure(curves, "positive")
    """
    rows = curves[curves.direction == direction]
    if rows.empty:
        raise ValueError(f"no {direction!r} curves; available: {sorted(set(curves.direction))}")
    fractions = sorted(rows.fraction.unique())
    series = [
        Series(name, _colour(i), part.set_index("fraction").reindex(fractions).accuracy.tolist())
        for i, (name, part) in enumerate(rows.groupby("method", sort=False))
    ]
    order = "least" if direction == "negative" else "most"
    return _lines_figure(
        fractions,
        series,
        f"fraction of image tokens removed ({order} relevant first)",
        "accuracy",
        f"{direction} perturbation",
        x_format=".1f",
    )


def model_comparison_figure(df: pd.DataFrame, tokens: str = "image", value: str = "identifiability") -> bq.Figure:
    """One line per model across normalised depth (layer / blocks), for models of different depths side by side.

    ``df`` is a several-models result of :func:`vitlens_widgets.analysis.identifiability_by_block`
    (it has a ``model`` column).

    Example:
        >>> df = vl.analysis.identifiability_by_block({"demo": lens, "random": vl.analysis.random_init_lens(lens)}, data)
        >>> model_comparison_figure(df, tokens="cls")
    """
    if "model" not in df:
        raise ValueError("df has no model column: pass a dict or list of lenses to the analysis")
    rows = df[df.tokens == tokens]
    series = []
    for i, (name, part) in enumerate(rows.groupby("model", sort=False)):
        part = part.sort_values("layer")
        depth = part.layer.max()
        series.append(Series(str(name), _colour(i), part[value].tolist(), (part.layer / depth).tolist()))
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    return _lines_figure(
        ticks, series, "layer / blocks", value, f"{value} of the true class ({tokens} tokens)", x_format=".2f"
    )
