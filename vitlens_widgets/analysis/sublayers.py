"""What the attention and MLP sublayers add, block by block, over a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from .identifiability import batch_token_groups, masked_token_mean
from .models import over_models
from .runner import Batch, Job, Ray, run

MEASURES = (
    "attn_gain_rate",
    "mlp_gain_rate",
    "top1_from_attn",
    "top1_from_mlp",
    "top1_from_previous",
    "top1_new",
)


@over_models
def sublayer_contributions(
    lens: Lens, data: Any, batch_size: int = 64, progress: bool = True, executor: str | Ray = "local"
) -> pd.DataFrame:
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
    return run(sublayer_job(batch_size), lens, data, executor, progress)


def sublayer_job(batch_size: int = 64) -> Job:
    """:func:`sublayer_contributions` as a runner job.

    Example:
        >>> run(sublayer_job(), lens, vl.data.shapes(50, seed=2))
    """
    return Job(map=_sublayer_partials, reduce=_sublayer_frame, desc="sublayers", batch_size=batch_size)


def _sublayer_partials(lens: Lens, _state: Any, batch: Batch) -> dict[str, np.ndarray]:
    per_token = _per_token_measures(lens.trace_batch(batch.images), batch.labels)  # measure -> [B, L, T]
    groups = batch_token_groups(lens, batch.masks)
    for group in ("object", "context"):
        groups.setdefault(group, np.zeros((len(batch), lens.tokens.n_tokens), bool))
    return {  # group -> [B, measures, L], NaN for images without tokens in the group
        f"measures/{group}": np.stack([masked_token_mean(per_token[m].astype(np.float32), select) for m in MEASURES], 1)
        for group, select in groups.items()
    }


def _sublayer_frame(lens: Lens, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for key, values in columns.items():
        kind, _, group = key.partition("/")
        present = ~np.isnan(values).all(axis=(1, 2)) if kind == "measures" else np.zeros(0, bool)
        if not present.any():
            continue
        mean = np.nansum(values[present].astype(np.float64), axis=0) / present.sum()  # [measures, L]
        for b in range(lens.depth):
            rows.append(
                {"block": b + 1, "tokens": group, "images": int(present.sum()), **dict(zip(MEASURES, mean[:, b]))}
            )
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
