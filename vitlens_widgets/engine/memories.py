"""Sublayer parameters read as key-value memories: their value vectors projected onto the class embeddings.

The primitives the explorer and the analyses share (no DataFrames here); the analyses
themselves, and what memory ``i`` of a block is, are in :mod:`vitlens_widgets.analysis.memories`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

KINDS = ("mlp", "attn")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'mlp' or 'attn', got {kind!r}")
    return kind


def value_vectors(model: nn.Module, block: int, kind: str = "mlp") -> torch.Tensor:
    """Value vectors of block ``block`` (1-based) as columns, ``[D, memories]``."""
    check_kind(kind)
    blocks = list(model.blocks)
    if not 1 <= block <= len(blocks):
        raise ValueError(f"block must be 1..{len(blocks)}, got {block}")
    sub = blocks[block - 1]
    if kind == "mlp":
        fc2 = getattr(sub.mlp, "fc2", None)
        if not isinstance(fc2, nn.Linear):
            raise ValueError(f"block {block}'s MLP has no linear fc2 layer; MLP memories need a timm Mlp")
        return fc2.weight.detach()
    return sub.attn.proj.weight.detach()


def class_embeddings(model: nn.Module) -> torch.Tensor:
    """The class embedding matrix ``[C, D]`` (for distilled DeiT, the mean of both heads)."""
    head = model.head.weight.detach()
    dist = getattr(model, "head_dist", None)
    return (head + dist.weight.detach()) / 2 if isinstance(dist, nn.Linear) else head


def memory_projections(model: nn.Module, block: int, kind: str = "mlp", normalize: bool = False) -> np.ndarray:
    """float32 ``[C, memories]``: every value vector of a block read as class scores (``E @ v``).

    ``normalize=True`` L2-normalises class embeddings and values first (cosine similarities).

    Example:
        >>> scores = memory_projections(lens.model, block=6)  # [C, memories]
        >>> lens.class_names[scores[:, 0].argmax()]  # the class memory 0 writes most
    """
    values = value_vectors(model, block, kind).float()
    embed = class_embeddings(model).float()
    if normalize:
        values = values / values.norm(dim=0, keepdim=True).clamp_min(1e-12)
        embed = embed / embed.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (embed @ values).cpu().numpy()
