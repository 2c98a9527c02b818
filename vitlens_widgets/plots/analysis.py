"""bqplot figures of the dataset analyses, built from their DataFrames."""

from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import pandas as pd

GROUP_COLOURS = {"cls": "#1f77b4", "image": "#7f7f7f", "object": "#ff7f0e", "context": "#2ca02c"}
MEASURE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _lines_figure(
    x: Sequence[float],
    series: list[tuple[str, str, Sequence[float]]],
    x_label: str,
    y_label: str,
    title: str,
    y_range: tuple[float, float] | None = (0.0, 1.0),
) -> bq.Figure:
    x_scale = bq.LinearScale()
    y_scale = bq.LinearScale(min=y_range[0], max=y_range[1]) if y_range else bq.LinearScale()
    marks = [
        bq.Lines(
            x=list(x),
            y=list(y),
            scales={"x": x_scale, "y": y_scale},
            colors=[colour],
            labels=[label],
            display_legend=True,
            marker="circle",
            marker_size=24,
        )
        for label, colour, y in series
    ]
    axes = [
        bq.Axis(scale=x_scale, label=x_label, tick_format="d", tick_values=list(x)),
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
        series.append((group, GROUP_COLOURS[group], rows[value].tolist()))
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
    series = [(m, MEASURE_COLOURS[i], rows[m].tolist()) for i, m in enumerate(MEASURES)]
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
        series.append(
            (name, MEASURE_COLOURS[i % len(MEASURE_COLOURS)], part.set_index("layer").reindex(layers).change.tolist())
        )
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
        colour = MEASURE_COLOURS[i % len(MEASURE_COLOURS)]
        series.append((f"{kind} (trained)", colour, rows.trained.tolist()))
        series.append((f"{kind} (random init)", "#bbbbbb" if i == 0 else "#888888", rows.random.tolist()))
    return _lines_figure(blocks, series, "block", "best cosine per class (mean)", "class-value agreement")
