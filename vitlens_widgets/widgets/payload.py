"""What the explorer's front end is sent: metric slices and token summaries as compact binary arrays.

Pure functions over a :class:`~vitlens_widgets.engine.trace.Trace`; shared by the
live widget and the self-contained HTML export so both show the same numbers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..engine.memories import memory_projections
from ..engine.trace import SITES, RankIndex, Trace, check_site
from .specs import check_metric

TOPK = 5


def metric_slices(
    trace: Trace, site: str, metric: str, classes: Sequence[int], index: RankIndex | None = None
) -> np.ndarray:
    """float32 ``[len(classes), rows, T]``: ``metric`` of each class at every layer and token of ``site``.

    ``index``, a :class:`RankIndex` of this trace and site, makes identifiability a table lookup.
    """
    check_site(site)
    check_metric(metric)
    classes = [trace.class_names.index(int(c)) for c in classes]
    if metric == "identifiability":
        if index is not None:
            return np.stack([index.identifiability(c) for c in classes])
        return np.stack([trace.identifiability(c, site) for c in classes])
    if metric == "probability":
        return trace.class_probs(classes, site)
    if metric == "logit":
        return np.ascontiguousarray(np.moveaxis(trace.logits(site)[..., classes], -1, 0), dtype=np.float32)
    raise AssertionError(f"metric {metric!r} has a descriptor but no maths")


def token_topk(trace: Trace, site: str, k: int = TOPK) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` classes per layer and token: int16 indices and float32 probabilities, ``[rows, T, k]``."""
    top = trace.topk(k=min(k, trace.num_classes), site=site)
    return top.indices.astype(np.int16), top.probs.astype(np.float32)


def prefetch_classes(trace: Trace, limit: int = 64) -> list[int]:
    """Classes worth sending before they are asked for.

    Every class when there are at most ``limit``; otherwise the prediction and
    the top classes of [CLS] (or the mean image token) at the last layers of
    every site, best first, up to ``limit``.
    """
    if trace.num_classes <= limit:
        return list(range(trace.num_classes))
    picks = [trace.prediction.index]
    for site in SITES:
        logits = trace.logits(site)[-1]
        token_logits = logits[0] if trace.tokens.n_prefix else logits.mean(0)
        picks += np.argsort(-token_logits)[:limit].tolist()
    return list(dict.fromkeys(int(c) for c in picks))[:limit]


def png_bytes(image: np.ndarray) -> bytes:
    """The crop as PNG bytes (lossless) for drawing under the token grid."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def layout_dict(trace: Trace) -> dict:
    tokens = trace.tokens
    return {
        "depth": trace.depth,
        "grid": list(tokens.grid),
        "prefix": list(tokens.prefix),
        "n_tokens": tokens.n_tokens,
        "names": list(tokens.names),  # the engine's token names, for labels ("cls", "patch 3,4")
        "image_size": list(trace.image.shape[:2]),
    }


def token_memories(
    lens, trace: Trace, token: int, block: int, kind: str, cache: dict, k: int = 5, classes: int = 3
) -> dict[str, np.ndarray]:
    """The ``k`` memories of a block most activated by ``token`` (largest key coefficients), with the
    ``classes`` classes each one writes most strongly (``cache`` keeps each block's projections)."""
    keys = lens.memory_keys(trace, block, kind)[token]
    if np.isnan(keys).all():
        raise ValueError(f"token {token} was removed from the sequence: it activates no memory")
    if (block, kind) not in cache:
        cache[(block, kind)] = np.argsort(-memory_projections(lens.model, block, kind), axis=0)[
            :classes
        ].T  # [M, classes]
    top = np.argsort(-keys)[:k]
    return {"memory": top, "coefficient": keys[top], "classes": cache[(block, kind)][top]}
