"""Class identifiability by block over a dataset, per token group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..data.shapes import patch_fraction
from ..engine.lens import Lens
from ..engine.trace import TraceBatch, check_site, layer_numbers


def iter_labelled(data: Any) -> Iterable[tuple[Any, int, np.ndarray | None]]:
    """``(image, label, mask or None)`` items from a ``ShapesBatch``, a Dataset or an iterable of tuples."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        masks = getattr(data, "masks", None)
        for i in range(len(data.labels)):
            yield data.images[i], int(data.labels[i]), None if masks is None else masks[i]
        return
    for item in data:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError("each data item must be (image, label) or (image, label, mask)")
        yield item[0], int(item[1]), (item[2] if len(item) > 2 else None)


def token_groups(lens: Lens, mask: np.ndarray | None, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Boolean token selections: ``cls`` (when present), ``image``, and ``object``/``context`` given a pixel mask.

    The mask must cover the model's input crop (``H x W`` of ``trace.image``); a
    patch is an object token when at least ``threshold`` of its pixels are object.
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


def identifiability_by_block(
    lens: Lens,
    data: Any,
    site: str = "resid",
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean identifiability of the true class, and top-1 rate, per layer and token group.

    Token groups: ``cls``, ``image`` (all patches), and ``object`` / ``context``
    patches where masks are given. Rows are averaged over tokens within an image,
    then over images (images with no token in a group do not count for it).

    Returns a DataFrame with columns ``site, layer, tokens, identifiability,
    top1_rate, images``.

    Example:
        >>> df = identifiability_by_block(Lens.demo(), vl.data.shapes(500, seed=2))
        >>> df.pivot(index="layer", columns="tokens", values="identifiability")
    """
    check_site(site)
    sums: dict[tuple[int, str], np.ndarray] = {}  # (layer, group) -> [sum ident, sum top1, images]
    items = iter_labelled(data)
    layers = list(layer_numbers(site, lens.depth))
    batch: list[tuple[Any, int, np.ndarray | None]] = []

    def flush() -> None:
        traces = lens.trace_batch([b[0] for b in batch])
        _accumulate(traces, [b[1] for b in batch], [b[2] for b in batch], lens, site, layers, sums)

    from tqdm.auto import tqdm

    total = len(data.labels) if hasattr(data, "labels") else (len(data) if hasattr(data, "__len__") else None)
    for item in tqdm(items, total=total, desc="identifiability", unit="img", disable=not progress):
        batch.append(item)
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()
    rows = [
        {
            "site": site,
            "layer": layer,
            "tokens": group,
            "identifiability": acc[0] / acc[2],
            "top1_rate": acc[1] / acc[2],
            "images": int(acc[2]),
        }
        for (layer, group), acc in sums.items()
        if acc[2] > 0
    ]
    return pd.DataFrame(rows).sort_values(["layer", "tokens"], ignore_index=True)


def _accumulate(
    traces: TraceBatch,
    labels: list[int],
    masks: list[np.ndarray | None],
    lens: Lens,
    site: str,
    layers: list[int],
    sums: dict[tuple[int, str], np.ndarray],
) -> None:
    rank = traces.rank(labels, site)  # [B, rows, T]
    ident = 1.0 - rank / len(lens.class_names)
    top1 = rank == 0
    for i, mask in enumerate(masks):
        for group, select in token_groups(lens, mask).items():
            if not select.any():
                continue
            mean_ident = ident[i][:, select].mean(-1)
            mean_top1 = top1[i][:, select].mean(-1)
            for row, layer in enumerate(layers):
                acc = sums.setdefault((layer, group), np.zeros(3))
                acc += (mean_ident[row], mean_top1[row], 1.0)
