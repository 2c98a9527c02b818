"""Tokens removed per image, in batches: context removal both ways (object without context, context without object).

Removing a token means taking it out of the sequence after the position
embeddings, exactly as ``lens.trace(image, drop_tokens=...)`` does; here each
image of a batch may remove different tokens, so a whole batch runs as one
forward pass (an attention mask per image) instead of one pass per image.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..engine.lens import Lens
from ..engine.trace import identifiability_from_rank, layer_numbers, rank_of
from .identifiability import batch_token_groups, paired_effect_rows
from .models import over_models
from .runner import Batch, Job, Ray, run


def prepared_batch(lens: Lens, images: list[Any]) -> torch.Tensor:
    """The model's input batch ``[B, 3, H, W]`` for ``images`` (preprocessed once, reused across removals)."""
    dtype = next(lens.model.parameters()).dtype
    return torch.stack([lens.prepare(im).tensor for im in images]).to(lens.device, dtype)


def forward_kept(
    lens: Lens, images: list[Any] | torch.Tensor, keep: np.ndarray, layers: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """Residual-stream logits ``[B, L+1, T, C]`` (NaN for removed tokens) and model logits ``[B, C]``.

    ``images``: a list of images or a :func:`prepared_batch`. ``keep`` is bool
    ``[B, T]``: the tokens each image keeps (prefix tokens must be kept).
    Equals ``lens.trace(image, drop_tokens=<not kept>)`` image by image.
    ``layers=False`` skips the per-layer readout (returns None for it).
    """
    keep = np.asarray(keep, bool)
    if not keep[:, : lens.tokens.n_prefix].all():
        raise ValueError("prefix tokens ([CLS], registers) cannot be removed")
    adapter = lens.adapter
    x = images if isinstance(images, torch.Tensor) else prepared_batch(lens, images)
    kept = torch.from_numpy(keep).to(lens.device)
    n_tokens = keep.shape[1]
    allowed = kept[:, None, :] | torch.eye(n_tokens, dtype=torch.bool, device=lens.device)  # removed rows: self only
    mask = torch.zeros(allowed.shape, dtype=x.dtype, device=lens.device).masked_fill_(~allowed, float("-inf"))[:, None]
    with torch.inference_mode():
        embedded = adapter.embed(x)
        h = embedded.tokens
        states = [h]
        for i in range(adapter.depth):
            h = h + adapter.attn_update(i, h, embedded.context, mask=mask)
            h = h + adapter.mlp_update(i, h)
            states.append(h)
        if "cls" in lens.tokens.prefix or keep.all():  # pooling reads prefix tokens only (or nothing was removed)
            output = adapter.model_logits(h).float()
        else:  # average pooling: over each image's kept tokens
            output = torch.cat([adapter.model_logits(h[i : i + 1, kept[i]]) for i in range(len(keep))]).float()
        logits = adapter.readout(torch.stack(states, 1)).float().cpu().numpy() if layers else None
    if logits is not None:
        logits[~np.broadcast_to(keep[:, None, :], logits.shape[:3])] = np.nan
    return logits, output.cpu().numpy()


REMOVALS = ("context", "object")


@over_models
def context_removal(
    lens: Lens,
    data: Any,
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    executor: str | Ray = "local",
) -> pd.DataFrame:
    """Remove each image's context tokens (object left alone) or its object tokens (context left), and measure.

    Per layer, for the tokens that remain: their top-1 rate (share whose
    projected top-1 class is the true class, the paper's metric) and mean
    identifiability, against the same tokens in the unperturbed model; and the
    model's accuracy with and without the removal. Each comparison is a paired
    sign-flip permutation test over images (two-sided). Images whose kept group
    or removed group is empty are skipped.

    Returns columns ``removed, kept, layer, top1_rate, baseline_top1_rate,
    p_top1, identifiability, baseline_identifiability, p_identifiability,
    accuracy, baseline_accuracy, p_accuracy, images``.

    Example:
        >>> context_removal(Lens.demo(), vl.data.shapes(200, seed=2)).query("layer == 6")
    """
    return run(context_removal_job(n_permutations, batch_size, seed), lens, data, executor, progress)


def context_removal_job(n_permutations: int = 10_000, batch_size: int = 64, seed: int = 0) -> Job:
    """:func:`context_removal` as a runner job.

    Example:
        >>> run(context_removal_job(), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    return Job(
        map=_removal_partials,
        reduce=partial(_removal_frame, n_permutations=n_permutations, seed=seed),
        desc="context removal",
        batch_size=batch_size,
    )


REMOVAL_MEASURES = ("top1", "base_top1", "ident", "base_ident", "hit", "base_hit")


def _removal_partials(lens: Lens, _state: Any, batch: Batch) -> dict[str, np.ndarray]:
    """Per removal: ``valid`` (the image has tokens in both groups) and each measure, NaN / False where not valid."""
    if any(m is None for m in batch.masks):
        raise ValueError("context removal needs masks: give (image, label, mask) items or a ShapesBatch")
    labels, n_classes = batch.labels, lens.num_classes
    traces = lens.trace_batch(batch.images)
    x = prepared_batch(lens, batch.images)
    groups = batch_token_groups(lens, batch.masks)
    base_rank = traces.rank(labels, "resid")  # [B, L+1, T]
    base_hit = traces.predictions == labels
    out = {}
    for removed in REMOVALS:
        kept_group = "object" if removed == "context" else "context"
        valid = groups[kept_group].any(1) & groups[removed].any(1)
        idx = np.flatnonzero(valid)
        values = {measure: np.zeros((0, lens.depth + 1)) for measure in REMOVAL_MEASURES[:4]}
        values |= {"hit": np.zeros(0, bool), "base_hit": np.zeros(0, bool)}
        if valid.any():  # the removal runs on the valid images only (a smaller batch)
            logits, output = forward_kept(lens, x[idx], ~groups[removed][idx])
            rank = rank_of(np.nan_to_num(logits, nan=-np.inf), labels[idx])  # [b, L+1, T]
            select = groups[kept_group][idx][:, None, :]
            values = {
                "top1": _mean_over(rank == 0, select),
                "base_top1": _mean_over(base_rank[idx] == 0, select),
                "ident": _mean_over(identifiability_from_rank(rank, n_classes), select),
                "base_ident": _mean_over(identifiability_from_rank(base_rank[idx], n_classes), select),
                "hit": output.argmax(-1) == labels[idx],
                "base_hit": base_hit[idx],
            }
        out[f"{removed}/valid"] = valid
        out |= {f"{removed}/{k}": _scatter(v, idx, len(batch)) for k, v in values.items()}
    return out


def _scatter(values: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """Rows ``values`` placed at ``idx`` of ``n`` rows; the others NaN (floats) or False."""
    full = np.full((n, *values.shape[1:]), np.nan if values.dtype.kind == "f" else False, dtype=values.dtype)
    full[idx] = values
    return full


def _removal_frame(lens: Lens, columns: dict[str, np.ndarray], n_permutations: int, seed: int) -> pd.DataFrame:
    rows = []
    layers = list(layer_numbers("resid", lens.depth))
    for r, removed in enumerate(REMOVALS):
        valid = columns[f"{removed}/valid"]
        if not valid.any():
            continue
        values = {k: columns[f"{removed}/{k}"][valid] for k in REMOVAL_MEASURES}
        base = {measure: values[f"base_{measure}"] for measure in ("top1", "ident", "hit")}
        kept = "object" if removed == "context" else "context"
        for row in paired_effect_rows(values, base, layers, n_permutations, seed + r):
            rows.append({"removed": removed, "kept": kept, **row})
    return pd.DataFrame(rows)


def _mean_over(values: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Mean of ``values [B, rows, T]`` over the tokens ``select [B, 1, T]`` -> ``[B, rows]``."""
    select = np.broadcast_to(select, values.shape)
    return np.where(select, values, 0).sum(-1) / select.sum(-1)
