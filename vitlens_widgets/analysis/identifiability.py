"""Class identifiability by block over a dataset, per token group."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.shapes import patch_fraction
from ..engine.lens import Lens
from ..engine.trace import TraceBatch, check_site, identifiability_from_rank, layer_numbers
from .models import over_models
from .runner import Batch, Job, Ray, labelled_count, local_batches, run


def token_groups(lens: Lens, mask: np.ndarray | None, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Boolean token selections: ``cls`` (when present), ``image``, and ``object``/``context`` given a pixel mask.

    The mask must cover the model's input crop (``H x W`` of ``trace.image``); a
    patch is an object token when at least ``threshold`` of its pixels are object.

    Example:
        >>> data = vl.data.shapes(1, seed=2)
        >>> groups = token_groups(lens, data.masks[0])  # cls, image, object, context: bool [T] each
        >>> lens.trace(data.images[0]).identifiability(int(data.labels[0]))[-1, groups["object"]].mean()
    """
    layout = lens.tokens
    groups: dict[str, np.ndarray] = {}
    if "cls" in layout.prefix:
        groups["cls"] = np.arange(layout.n_tokens) == layout.prefix.index("cls")
    groups["image"] = np.arange(layout.n_tokens) >= layout.n_prefix
    if mask is not None:
        if mask.shape != lens.preprocessor.input_size:
            raise ValueError(
                f"mask is {mask.shape}, but must cover the model's {lens.preprocessor.input_size} input crop"
            )
        on_object = (patch_fraction(mask[None], layout.patch_size[0])[0] >= threshold).reshape(-1)
        groups["object"] = np.concatenate([np.zeros(layout.n_prefix, bool), on_object])
        groups["context"] = np.concatenate([np.zeros(layout.n_prefix, bool), ~on_object])
    return groups


def batch_token_groups(lens: Lens, masks: list[np.ndarray | None], threshold: float = 0.5) -> dict[str, np.ndarray]:
    """:func:`token_groups` for a whole batch: group -> bool ``[B, T]`` (object/context rows are empty without a mask)."""
    layout = lens.tokens
    n = len(masks)
    positions = np.arange(layout.n_tokens)
    groups: dict[str, np.ndarray] = {}
    if "cls" in layout.prefix:
        groups["cls"] = np.broadcast_to(positions == layout.prefix.index("cls"), (n, layout.n_tokens))
    groups["image"] = np.broadcast_to(positions >= layout.n_prefix, (n, layout.n_tokens))
    with_mask = [i for i, m in enumerate(masks) if m is not None]
    if with_mask:
        obj = np.zeros((n, layout.n_tokens), bool)
        ctx = np.zeros((n, layout.n_tokens), bool)
        for i in with_mask:
            per_image = token_groups(lens, masks[i], threshold)
            obj[i], ctx[i] = per_image["object"], per_image["context"]
        groups["object"], groups["context"] = obj, ctx
    return groups


def masked_token_mean(values: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Mean of ``values [B, rows, T]`` over the tokens ``select [B, T]`` (NaN values skipped); NaN where none."""
    use = select[:, None, :] & ~np.isnan(values)
    count = use.sum(axis=-1)
    total = np.where(use, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def labelled_batches(
    lens: Lens, data: Any, batch_size: int = 64, progress: bool = True, desc: str = "tracing", **perturbation: Any
) -> Iterator[tuple[TraceBatch, np.ndarray, list[np.ndarray | None]]]:
    """Stream ``(traces, labels, masks)`` batches over labelled data with a progress bar and bounded memory.

    Masks of an image folder come resized and cropped like their images.

    Example:
        >>> for traces, labels, masks in labelled_batches(lens, vl.data.shapes(256, seed=2), batch_size=64):
        ...     print((traces.predictions == labels).mean())
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with tqdm(total=labelled_count(data), desc=desc, unit="img", disable=not progress) as bar:
        for batch in local_batches(lens, data, batch_size):
            yield lens.trace_batch(batch.images, **perturbation), batch.labels, batch.masks
            bar.update(len(batch))


@dataclass
class PerImage:
    """Per image and layer: mean identifiability and top-1 rate of each token group (NaN where a group is empty).

    Example:
        >>> per_image = vl.analysis.per_image_identifiability(lens, vl.data.shapes(50, seed=2))
        >>> per_image.identifiability["object"].shape  # [images, layers]
    """

    layers: list[int]
    identifiability: dict[str, np.ndarray] = field(default_factory=dict)  # group -> [n_images, rows]
    top1: dict[str, np.ndarray] = field(default_factory=dict)


def per_image_identifiability(
    lens: Lens,
    data: Any,
    site: str = "resid",
    batch_size: int = 64,
    progress: bool = True,
    executor: str | Ray = "local",
    **perturbation: Any,
) -> PerImage:
    """Identifiability of the true class, averaged over each token group of each image, at every layer.

    Rows follow the data's order; ``object``/``context`` rows are NaN for images without a mask.

    Example:
        >>> per_image = per_image_identifiability(lens, vl.data.shapes(100, seed=2))
        >>> per_image.identifiability["object"].shape, per_image.layers  # [images, rows], layer numbers
    """
    return run(identifiability_job(site, batch_size, **perturbation), lens, data, executor, progress)


def identifiability_job(site: str = "resid", batch_size: int = 64, **perturbation: Any) -> Job:
    """:func:`per_image_identifiability` as a runner job (reduces to a :class:`PerImage`).

    Example:
        >>> per_image = run(identifiability_job("mlp"), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    check_site(site)
    return Job(
        map=partial(_identifiability_partials, site=site, perturbation=perturbation),
        reduce=partial(_per_image_from_columns, site=site),
        desc="identifiability",
        batch_size=batch_size,
    )


def _identifiability_partials(
    lens: Lens, _state: Any, batch: Batch, site: str, perturbation: dict[str, Any]
) -> dict[str, np.ndarray]:
    traces = lens.trace_batch(batch.images, **perturbation)
    rank = traces.rank(batch.labels, site)  # [B, rows, T], -1 for removed tokens
    ident = identifiability_from_rank(rank, lens.num_classes)
    top1 = np.where(rank < 0, np.nan, rank == 0)
    groups = batch_token_groups(lens, batch.masks)
    for group in ("object", "context"):
        groups.setdefault(group, np.zeros((len(batch), lens.tokens.n_tokens), bool))
    out = {"has_mask": np.array([m is not None for m in batch.masks])}
    for group, select in groups.items():
        out[f"identifiability/{group}"] = masked_token_mean(ident, select)
        out[f"top1/{group}"] = masked_token_mean(top1, select)
    return out


def _per_image_from_columns(lens: Lens, columns: dict[str, np.ndarray], site: str) -> PerImage:
    result = PerImage(list(layer_numbers(site, lens.depth)))
    with_masks = bool(columns.get("has_mask", np.zeros(0, bool)).any())
    for key in columns:
        kind, _, group = key.partition("/")
        if kind == "identifiability" and (with_masks or group not in ("object", "context")):
            result.identifiability[group] = columns[key]
            result.top1[group] = columns[f"top1/{group}"]
    return result


@over_models
def identifiability_by_block(
    lens: Lens,
    data: Any,
    site: str = "resid",
    batch_size: int = 64,
    progress: bool = True,
    executor: str | Ray = "local",
    **perturbation: Any,
) -> pd.DataFrame:
    """Mean identifiability of the true class, and top-1 rate, per layer and token group.

    Token groups: ``cls``, ``image`` (all patches), and ``object`` / ``context``
    patches where masks are given. Rows are averaged over tokens within an image,
    then over images (images with no token in a group do not count for it).
    Keyword arguments are trace perturbations (e.g. ``attention="self_only"``).
    ``executor="ray"`` (or :class:`~vitlens_widgets.analysis.runner.Ray`) runs the
    forward passes on a Ray actor pool; the result is the same.

    Returns a DataFrame with columns ``site, layer, tokens, identifiability,
    top1_rate, images``.

    Example:
        >>> df = identifiability_by_block(Lens.demo(), vl.data.shapes(500, seed=2))
        >>> df.pivot(index="layer", columns="tokens", values="identifiability")
    """
    per_image = per_image_identifiability(lens, data, site, batch_size, progress, executor, **perturbation)
    return by_block_frame(per_image, site)


def by_block_frame(per_image: PerImage, site: str) -> pd.DataFrame:
    """:func:`identifiability_by_block`'s table from per-image values.

    Example:
        >>> by_block_frame(per_image_identifiability(lens, vl.data.shapes(50, seed=2)), "resid")
    """
    rows = []
    for group, ident in per_image.identifiability.items():
        counts = np.sum(~np.isnan(ident), axis=0)
        with np.errstate(invalid="ignore"):
            mean_ident = np.nanmean(ident, axis=0)
            mean_top1 = np.nanmean(per_image.top1[group], axis=0)
        for r, layer in enumerate(per_image.layers):
            if counts[r]:
                rows.append(
                    {
                        "site": site,
                        "layer": layer,
                        "tokens": group,
                        "identifiability": float(mean_ident[r]),
                        "top1_rate": float(mean_top1[r]),
                        "images": int(counts[r]),
                    }
                )
    return pd.DataFrame(rows).sort_values(["layer", "tokens"], ignore_index=True)


@over_models
def object_context_test(
    lens: Lens,
    data: Any,
    n_permutations: int = 10_000,
    site: str = "resid",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    executor: str | Ray = "local",
) -> pd.DataFrame:
    """Paired permutation test of object vs context identifiability, per layer.

    For each image with both object and context tokens, take the difference of
    their mean identifiabilities; under the null hypothesis (no difference) the
    sign of each image's difference is exchangeable, so the p-value (two-sided)
    is the share of ``n_permutations`` random sign flips whose mean difference is
    at least as extreme as the observed one (with the usual +1 correction).

    Returns columns ``layer, object, context, difference, p_value, images, permutations``.

    Example:
        >>> object_context_test(lens, vl.data.shapes(300, seed=2), n_permutations=1000)
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    per_image = per_image_identifiability(lens, data, site, batch_size, progress, executor)
    return object_context_frame(per_image, n_permutations, seed)


def object_context_frame(per_image: PerImage, n_permutations: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """:func:`object_context_test`'s table from per-image values.

    Example:
        >>> object_context_frame(per_image_identifiability(lens, vl.data.shapes(50, seed=2)), 1000)
    """
    if "object" not in per_image.identifiability:
        raise ValueError("the object/context test needs masks: give (image, label, mask) items or a ShapesBatch")
    obj, ctx = per_image.identifiability["object"], per_image.identifiability["context"]
    both = ~np.isnan(obj).any(axis=1) & ~np.isnan(ctx).any(axis=1)
    diff = obj[both] - ctx[both]  # [n, rows]
    observed, p_values = paired_sign_flip_test(diff, n_permutations, seed)
    return pd.DataFrame(
        {
            "layer": per_image.layers,
            "object": obj[both].mean(axis=0),
            "context": ctx[both].mean(axis=0),
            "difference": observed,
            "p_value": p_values,
            "images": int(both.sum()),
            "permutations": n_permutations,
        }
    )


def paired_sign_flip_test(diff: np.ndarray, n_permutations: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean of paired differences ``diff [n, k]`` per column and its two-sided sign-flip permutation p-value."""
    if diff.shape[0] == 0:
        raise ValueError("no paired observations to test")
    observed = diff.mean(axis=0)
    rng = np.random.default_rng(seed)
    extreme = np.zeros(diff.shape[1])
    for start in range(0, n_permutations, 1000):
        signs = rng.choice([-1.0, 1.0], size=(min(1000, n_permutations - start), diff.shape[0]))
        flipped = signs @ diff / diff.shape[0]  # [permutations, k]
        extreme += (np.abs(flipped) >= np.abs(observed) - 1e-12).sum(axis=0)
    return observed, (extreme + 1) / (n_permutations + 1)


def paired_effect_rows(
    changed: dict[str, np.ndarray], base: dict[str, np.ndarray], layers: list[int], n_permutations: int, seed: int
) -> list[dict[str, Any]]:
    """Per layer: top-1 rate, identifiability and accuracy with a change and without it, each with its paired test.

    ``changed`` and ``base`` hold per-image arrays over the same images: ``top1`` and
    ``ident`` ``[n, rows]`` (means over a token group), ``hit`` ``[n]`` or ``[n, 1]``
    (whether the model's prediction is right).
    """
    _, p_top1 = paired_sign_flip_test(changed["top1"] - base["top1"], n_permutations, seed)
    _, p_ident = paired_sign_flip_test(changed["ident"] - base["ident"], n_permutations, seed)
    images = len(base["hit"])
    hit_diff = np.asarray(changed["hit"], float).reshape(images, -1) - np.asarray(base["hit"], float).reshape(
        images, -1
    )
    _, p_acc = paired_sign_flip_test(hit_diff, n_permutations, seed)
    return [
        {
            "layer": layer,
            "top1_rate": float(changed["top1"][:, r].mean()),
            "baseline_top1_rate": float(base["top1"][:, r].mean()),
            "p_top1": float(p_top1[r]),
            "identifiability": float(changed["ident"][:, r].mean()),
            "baseline_identifiability": float(base["ident"][:, r].mean()),
            "p_identifiability": float(p_ident[r]),
            "accuracy": float(changed["hit"].mean()),
            "baseline_accuracy": float(base["hit"].mean()),
            "p_accuracy": float(p_acc[0]),
            "images": images,
        }
        for r, layer in enumerate(layers)
    ]
