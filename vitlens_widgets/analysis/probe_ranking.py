"""The probe-ranked perturbation test: remove tokens in the order linear probes rank them, or the projection does.

The paper's evidence that the class-space projection has advantages over linear
probing: rank each image token by how identifiable its true class is, summed
over the blocks, once with per-position ridge probes and once with the
training-free projection; then remove tokens least identifiable first
(*negative*: accuracy should stay high) or most identifiable first (*positive*:
accuracy should fall fast). Optionally the paper's class-space relevance map
ranks them too. Removal is after the position embeddings, as everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..engine.lens import Lens
from ..engine.trace import rank_of
from .identifiability import paired_sign_flip_test
from .models import over_models
from .probes import _hidden_and_logits, ridge_fit
from .removal import forward_kept, labelled_chunks, prepared_batch

FRACTIONS = tuple(np.round(np.arange(0.0, 1.0, 0.1), 2))
DIRECTIONS = ("negative", "positive")


def fit_token_probes(lens: Lens, train: Any, alpha: float = 1.0, site: str = "resid") -> np.ndarray:
    """Ridge probes per block and image-token position: weights ``[blocks, patches, D + 1, C]``.

    For ``site="resid"`` the blocks' outputs (layers 1..L), as in the authors' code.
    """
    hidden, _, labels = _hidden_and_logits(lens, train, site)
    if site == "resid":
        hidden = hidden[:, 1:]
    targets = -np.ones((len(labels), lens.num_classes))
    targets[np.arange(len(labels)), labels] = 1.0
    image_tokens = hidden[:, :, lens.tokens.n_prefix :].transpose(1, 2, 0, 3)  # [blocks, patches, n, D]
    return ridge_fit(image_tokens, targets, alpha)


def probe_rank_sum(weights: np.ndarray, hidden: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[B, patches]``: the true class's rank under each token's probes, summed over blocks.

    ``hidden`` is ``[B, blocks, patches, D]`` (the image tokens of the probed layers).
    """
    scores = np.einsum("brpd,rpdc->brpc", hidden.astype(np.float64), weights[:, :, :-1]) + weights[None, :, :, -1]
    return rank_of(scores, labels).sum(1)


@over_models
def probe_ranked_removal(
    lens: Lens,
    train: Any,
    test: Any,
    fractions: Sequence[float] = FRACTIONS,
    alpha: float = 1.0,
    class_space: bool = False,
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy as tokens are removed in probe order, projection order (and class-space order, random order).

    Probes are fitted on ``train`` (per block output and token position);
    orders and accuracy are measured on ``test``. ``class_space=True`` adds the
    paper's relevance map (:func:`vitlens_widgets.explain.relevance`), one
    gradient pass per image. ``random`` removes tokens in a random order per image
    (seeded).

    Returns ``(curves, summary)``: ``curves`` has columns ``method, direction,
    fraction, accuracy``; ``summary`` has ``method, auc_negative,
    auc_positive, reference, p_negative, p_positive, images`` where the p-values
    are paired sign-flip tests over images of each method's per-image AUC (mean
    accuracy over the fractions) against the ``reference`` method's: the
    class-space map when computed (the paper's comparison), else the projection.

    Example:
        >>> curves, summary = probe_ranked_removal(Lens.demo(), vl.data.shapes(200, seed=5), vl.data.shapes(200, seed=2))
    """
    from ..explain.evaluate import removal_order

    weights = fit_token_probes(lens, train, alpha)
    layout = lens.tokens
    n_patches, n_prefix = layout.n_patches, layout.n_prefix
    rng = np.random.default_rng(seed)
    hits: dict[str, list[np.ndarray]] = {}
    for images, labels, _masks in labelled_chunks(test, batch_size, progress, "probe-ranked removal"):
        traces = lens.trace_batch(images)
        x = prepared_batch(lens, images)
        hidden = torch.stack([t.hidden["resid"][1:, n_prefix:] for t in traces]).float().numpy()
        values = {
            "probe": -probe_rank_sum(weights, hidden, labels),
            "projection": -traces.rank(labels, "resid")[:, 1:, n_prefix:].sum(1),
            "random": rng.random((len(labels), n_patches)),
        }
        if class_space:
            from ..explain.relevance import relevance

            values["class_space"] = np.stack(
                [relevance(lens, im, cls=int(y)).map.reshape(-1) for im, y in zip(images, labels)]
            )
        for name, v in values.items():
            result = np.zeros((len(labels), 2, len(fractions)), bool)
            for d, direction in enumerate(DIRECTIONS):
                orders = np.stack([removal_order(row, n_prefix, direction == "positive") for row in v])
                for f, fraction in enumerate(fractions):
                    removed = int(fraction * n_patches + 0.5)
                    if removed == 0:
                        result[:, d, f] = traces.predictions == labels
                        continue
                    keep = np.ones((len(labels), layout.n_tokens), bool)
                    np.put_along_axis(keep, orders[:, :removed], False, axis=1)
                    _, output = forward_kept(lens, x, keep, layers=False)
                    result[:, d, f] = output.argmax(-1) == labels
            hits.setdefault(name, []).append(result)
    per_image = {name: np.concatenate(v) for name, v in hits.items()}
    curves = pd.DataFrame(
        [
            {"method": name, "direction": direction, "fraction": fraction, "accuracy": float(h[:, d, f].mean())}
            for name, h in per_image.items()
            for d, direction in enumerate(DIRECTIONS)
            for f, fraction in enumerate(fractions)
        ]
    )
    auc = {name: h.mean(-1) for name, h in per_image.items()}  # [images, 2]
    reference = "class_space" if class_space else "projection"
    rows = []
    for name, a in auc.items():
        _, p = paired_sign_flip_test(a - auc[reference], n_permutations, seed)
        rows.append(
            {
                "method": name,
                "auc_negative": float(a[:, 0].mean()),
                "auc_positive": float(a[:, 1].mean()),
                "reference": reference,
                "p_negative": float(p[0]) if name != reference else np.nan,
                "p_positive": float(p[1]) if name != reference else np.nan,
                "images": len(a),
            }
        )
    return curves, pd.DataFrame(rows)
