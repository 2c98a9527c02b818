"""What the attention and MLP sublayers add, block by block, over a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from .identifiability import batch_token_groups, labelled_batches, masked_token_mean
from .models import over_models

MEASURES = (
    "attn_gain_rate",
    "mlp_gain_rate",
    "top1_from_attn",
    "top1_from_mlp",
    "top1_from_previous",
    "top1_new",
)


@over_models
def sublayer_contributions(lens: Lens, data: Any, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Per block and token group, how each sublayer moves the true class and where the block's top-1 comes from.

    * ``attn_gain_rate``: share of tokens whose attention update, projected, gives
      the true class a higher logit than the stream entering the block does;
    * ``mlp_gain_rate``: the same for the MLP update against the stream it reads
      (after the block's attention);
    * ``top1_from_attn`` / ``top1_from_mlp`` / ``top1_from_previous``: share of
      tokens whose block-output top-1 class equals the top-1 of the attention
      update / of the MLP update / of the previous layer's output (these can
      overlap); ``top1_new``: equals none of the three.

    Shares are averaged over the tokens of a group within an image, then over
    images. Returns columns ``block, tokens, images`` and the measures above.

    Example:
        >>> sublayer_contributions(Lens.demo(), vl.data.shapes(500, seed=2))
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for traces, labels, masks in labelled_batches(lens, data, batch_size, progress, "sublayers"):
        per_token = _per_token_measures(traces, labels)  # measure -> [B, L, T]
        for group, select in batch_token_groups(lens, masks).items():
            present = select.any(axis=1)
            if not present.any():
                continue
            means = np.stack([masked_token_mean(per_token[m].astype(np.float32), select) for m in MEASURES])
            sums[group] = sums.get(group, 0) + np.nansum(means[:, present], axis=1)  # [measures, L]
            counts[group] = counts.get(group, 0) + int(present.sum())
    rows = []
    for group, total in sums.items():
        mean = total / counts[group]
        for b in range(lens.depth):
            rows.append({"block": b + 1, "tokens": group, "images": counts[group], **dict(zip(MEASURES, mean[:, b]))})
    return pd.DataFrame(rows).sort_values(["block", "tokens"], ignore_index=True)


def _per_token_measures(traces, labels: np.ndarray) -> dict[str, np.ndarray]:
    resid, attn, mlp = (traces.logits(site) for site in ("resid", "attn", "mlp"))
    mid = traces.mid_logits()
    index = labels[:, None, None, None]

    def true_logit(logits: np.ndarray) -> np.ndarray:
        return np.take_along_axis(logits, index, axis=-1)[..., 0]

    out_top1, prev_top1 = resid[:, 1:].argmax(-1), resid[:, :-1].argmax(-1)
    attn_top1, mlp_top1 = attn.argmax(-1), mlp.argmax(-1)
    from_attn, from_mlp, from_previous = out_top1 == attn_top1, out_top1 == mlp_top1, out_top1 == prev_top1
    return {
        "attn_gain_rate": true_logit(attn) > true_logit(resid[:, :-1]),
        "mlp_gain_rate": true_logit(mlp) > true_logit(mid),
        "top1_from_attn": from_attn,
        "top1_from_mlp": from_mlp,
        "top1_from_previous": from_previous,
        "top1_new": ~(from_attn | from_mlp | from_previous),
    }
