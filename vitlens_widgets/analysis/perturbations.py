"""How perturbing attention or removing tokens changes identifiability and accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..engine.lens import Lens
from ..engine.trace import layer_numbers
from .identifiability import iter_labelled, labelled_count, token_groups
from .models import over_models

DROP_GROUPS = ("object", "context")

DEFAULT_PERTURBATIONS: dict[str, dict[str, Any]] = {
    "self_only": {"attention": "self_only"},
    "no_cls": {"attention": "no_cls"},
    "drop_context": {"drop": "context"},
    "drop_object": {"drop": "object"},
}


@over_models
def perturbation_effects(
    lens: Lens,
    data: Any,
    perturbations: Mapping[str, Mapping[str, Any]] | None = None,
    site: str = "resid",
    progress: bool = True,
) -> pd.DataFrame:
    """Identifiability per layer and token group, and accuracy, under each perturbation vs the unperturbed model.

    ``perturbations`` maps a name to trace options (``attention``, ``blocks``,
    ``renormalize``, ``drop_tokens``) or to ``{"drop": "object" | "context"}``,
    which removes that token group of each image (needs masks). Each
    perturbation costs one extra forward pass per image.

    Returns columns ``perturbation, layer, tokens, identifiability, baseline,
    change, accuracy, baseline_accuracy, images``.

    Example:
        >>> perturbation_effects(lens, vl.data.shapes(500, seed=2), {"self_only": {"attention": "self_only"}})
    """
    chosen = dict(perturbations or DEFAULT_PERTURBATIONS)
    sums: dict[tuple[str, str], list] = {}
    correct: dict[str, int] = {name: 0 for name in ["none", *chosen]}
    n = 0
    for image, label, mask in tqdm(
        iter_labelled(data), total=labelled_count(data), desc="perturbations", disable=not progress
    ):
        groups = token_groups(lens, mask)
        traces = {"none": lens.trace(image)}
        for name, options in chosen.items():
            traces[name] = lens.trace(image, **_options_for(options, groups))
        for name, trace in traces.items():
            correct[name] += int(trace.prediction.index == label)
            ident = trace.identifiability(label, site)
            for group, select in groups.items():
                values = ident[:, select]
                kept = ~np.isnan(values)
                if kept.any():
                    acc = sums.setdefault((name, group), [np.zeros(len(ident)), 0])
                    with np.errstate(invalid="ignore"):
                        acc[0] += np.nan_to_num(np.nanmean(values, axis=1))
                    acc[1] += 1
        n += 1
    if n == 0:
        raise ValueError("no images given")
    return _summary_frame(lens, site, chosen, sums, correct, n)


def _options_for(options: Mapping[str, Any], groups: dict[str, np.ndarray]) -> dict[str, Any]:
    options = dict(options)
    drop = options.pop("drop", None)
    if drop is None:
        return options
    if drop not in DROP_GROUPS:
        raise ValueError(f"drop must be one of {DROP_GROUPS}, got {drop!r}")
    if drop not in groups:
        raise ValueError(f"drop={drop!r} needs masks: give (image, label, mask) items or a ShapesBatch")
    tokens = np.flatnonzero(groups[drop]).tolist()
    remaining = int(groups["image"].sum()) - len(tokens)
    return {**options, "drop_tokens": tokens if remaining > 0 else tokens[:-1]}


def _summary_frame(lens: Lens, site: str, chosen: Mapping, sums: dict, correct: dict[str, int], n: int) -> pd.DataFrame:
    layers = list(layer_numbers(site, lens.depth))
    rows = []
    for (name, group), (total, count) in sums.items():
        if name == "none":
            continue
        base_total, base_count = sums[("none", group)]
        for r, layer in enumerate(layers):
            mean, baseline = total[r] / count, base_total[r] / base_count
            rows.append(
                {
                    "perturbation": name,
                    "layer": layer,
                    "tokens": group,
                    "identifiability": float(mean),
                    "baseline": float(baseline),
                    "change": float(mean - baseline),
                    "accuracy": correct[name] / n,
                    "baseline_accuracy": correct["none"] / n,
                    "images": count,
                }
            )
    order = {name: i for i, name in enumerate(chosen)}
    df = pd.DataFrame(rows)
    return df.sort_values(
        ["perturbation", "layer", "tokens"],
        key=lambda c: c.map(order) if c.name == "perturbation" else c,
        ignore_index=True,
    )
