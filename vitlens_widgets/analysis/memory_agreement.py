"""Key-value agreement of attention and MLP memories, by the paper's text or the authors' code, by outcome.

The paper's text: a token agrees when one of its ``top_memories`` most activated
memories has the true class among the ``top_classes`` classes its value writes
most. The authors' code (``src/memories.py``): one of those memories is among
the true class's ``top_classes`` highest-scoring memories. Both read values in
class space as :mod:`.memories` does; key coefficients are the ``fc1`` outputs
(MLP) or the output projection's input (attention, the heads' mixed values,
which is the authors' ``attn_weights @ values``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from .identifiability import labelled_batches, paired_sign_flip_test, token_groups
from .memories import KeyCapture, _check_kind, memory_projections
from .models import over_models

KV_DEFINITIONS = ("text", "code")


@over_models
def memory_agreement(
    lens: Lens,
    data: Any,
    kind: str = "mlp",
    top_memories: int = 5,
    top_classes: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    definition: str = "text",
    by_outcome: bool = False,
    n_permutations: int = 10_000,
) -> pd.DataFrame:
    """Key-value agreement with either definition, optionally split by outcome, with a paired test per block.

    Extends :func:`~vitlens_widgets.analysis.key_value_agreement` (the text
    definition, no outcome split, no test), which it equals for
    ``definition="text", by_outcome=False`` apart from the ``p_value`` column.

    For each token, take the ``top_memories`` memories with the largest key
    coefficients. ``definition="text"`` (the paper's wording): the token agrees
    when the true class is among the ``top_classes`` classes of any of them.
    ``definition="code"`` (the authors' code): it agrees when any of them is
    among the true class's ``top_classes`` memories (the memories whose values
    write that class most). The baseline replaces the true class by a random
    other class (seeded), drawn once per image. ``by_outcome=True`` adds an
    ``outcome`` column and splits images the model classifies correctly from the
    others. ``p_value``: paired sign-flip permutation test over images of
    agreement vs the random-class baseline (two-sided).

    Returns columns ``block, kind, tokens, [outcome,] agreement, random_class, p_value, images``.

    Example:
        >>> memory_agreement(lens, vl.data.shapes(200, seed=2), "attn", definition="code", by_outcome=True)
    """
    _check_kind(kind)
    if definition not in KV_DEFINITIONS:
        raise ValueError(f"definition must be 'text' or 'code', got {definition!r}")
    projections = [memory_projections(lens.model, b, kind) for b in range(1, lens.depth + 1)]
    if definition == "text":
        writes = [np.argsort(-p, axis=0)[:top_classes] for p in projections]  # per block: [top_classes, M]
    else:
        members = []
        for p in projections:  # per block: bool [C, M], a class's top memories
            member = np.zeros(p.shape, bool)
            np.put_along_axis(member, np.argsort(-p, axis=1)[:, :top_classes], True, axis=1)
            members.append(member)
    rng = np.random.default_rng(seed)
    per_image: dict[tuple, list[tuple[float, float]]] = {}
    with KeyCapture(lens.model, kind) as capture:  # the lens's own forward passes fire the hooks
        for traces, labels, masks in labelled_batches(lens, data, batch_size, progress, "key-value agreement"):
            others = (labels + rng.integers(1, lens.num_classes, len(labels))) % lens.num_classes
            outcomes = np.where(traces.predictions == labels, "correct", "wrong")
            for b, keys in enumerate(capture.keys):
                active = keys.topk(top_memories, dim=-1).indices.cpu().numpy()  # [B, T, top_memories]
                if definition == "text":
                    written = writes[b][:, active]  # [top_classes, B, T, top_memories]
                    hit_true = (written == labels[None, :, None, None]).any(axis=(0, 3))  # [B, T]
                    hit_random = (written == others[None, :, None, None]).any(axis=(0, 3))
                else:
                    hit_true = np.take_along_axis(members[b][labels][:, None, :], active, axis=2).any(-1)
                    hit_random = np.take_along_axis(members[b][others][:, None, :], active, axis=2).any(-1)
                for i, mask in enumerate(masks):
                    for group, select in token_groups(lens, mask).items():
                        if not select.any():
                            continue
                        key = (b + 1, group, outcomes[i]) if by_outcome else (b + 1, group)
                        pair = (hit_true[i, select].mean(), hit_random[i, select].mean())
                        per_image.setdefault(key, []).append(pair)
            capture.keys.clear()
    rows = []
    for key, pairs in per_image.items():
        values = np.array(pairs)  # [images, 2]
        _, p_value = paired_sign_flip_test(values[:, :1] - values[:, 1:], n_permutations, seed)
        rows.append(
            {
                "block": key[0],
                "kind": kind,
                "tokens": key[1],
                **({"outcome": key[2]} if by_outcome else {}),
                "agreement": float(values[:, 0].mean()),
                "random_class": float(values[:, 1].mean()),
                "p_value": float(p_value[0]),
                "images": len(values),
            }
        )
    order = ["block", "tokens", "outcome"] if by_outcome else ["block", "tokens"]
    return pd.DataFrame(rows).sort_values(order, ignore_index=True)
