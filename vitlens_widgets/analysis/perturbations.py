"""How perturbing attention or removing tokens changes identifiability and accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from ..engine.trace import layer_numbers
from .identifiability import token_groups
from .models import over_models
from .runner import Batch, Job, Ray, run

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
    executor: str | Ray = "local",
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
    return run(perturbation_job(perturbations, site), lens, data, executor, progress)


def perturbation_job(perturbations: Mapping[str, Mapping[str, Any]] | None = None, site: str = "resid") -> Job:
    """:func:`perturbation_effects` as a runner job.

    Example:
        >>> run(perturbation_job({"self_only": {"attention": "self_only"}}), lens, vl.data.shapes(50, seed=2))
    """
    chosen = {name: dict(options) for name, options in (perturbations or DEFAULT_PERTURBATIONS).items()}
    return Job(
        map=partial(_perturbation_partials, chosen=chosen, site=site),
        reduce=partial(_perturbation_frame, chosen=chosen, site=site),
        desc="perturbations",
        batch_size=16,
    )


def _perturbation_partials(
    lens: Lens, _state: Any, batch: Batch, chosen: Mapping[str, Mapping[str, Any]], site: str
) -> dict[str, np.ndarray]:
    """Per image: correct or not, and each token group's mean identifiability per layer, under each perturbation."""
    names = ["none", *chosen]
    rows = len(layer_numbers(site, lens.depth))
    group_names = [*token_groups(lens, None), "object", "context"]
    out = {f"correct/{name}": np.zeros(len(batch), bool) for name in names}
    out |= {f"ident/{name}/{g}": np.full((len(batch), rows), np.nan) for name in names for g in group_names}
    for i, (image, label, mask) in enumerate(zip(batch.images, batch.labels.tolist(), batch.masks)):
        groups = token_groups(lens, mask)
        traces = {"none": lens.trace(image)}
        for name, options in chosen.items():
            traces[name] = lens.trace(image, **_options_for(options, groups))
        for name, trace in traces.items():
            out[f"correct/{name}"][i] = trace.prediction.index == label
            ident = trace.identifiability(label, site)
            for group, select in groups.items():
                values = ident[:, select]
                if (~np.isnan(values)).any():
                    with np.errstate(invalid="ignore"):
                        out[f"ident/{name}/{group}"][i] = np.nan_to_num(np.nanmean(values, axis=1))
    return out


def _perturbation_frame(
    lens: Lens, columns: dict[str, np.ndarray], chosen: Mapping[str, Mapping[str, Any]], site: str
) -> pd.DataFrame:
    n = len(columns["index"])
    if n == 0:
        raise ValueError("no images given")
    correct = {name: int(columns[f"correct/{name}"].sum()) for name in ["none", *chosen]}
    sums = {}
    for key, values in columns.items():
        kind, _, rest = key.partition("/")
        present = ~np.isnan(values[:, 0]) if kind == "ident" else np.zeros(0, bool)
        if present.any():
            name, _, group = rest.partition("/")
            sums[(name, group)] = [values[present].sum(axis=0), int(present.sum())]
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
