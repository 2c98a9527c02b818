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
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..engine.lens import Lens
from ..engine.trace import rank_of
from .identifiability import paired_sign_flip_test
from .models import over_models
from .probes import _hidden_and_logits, ridge_fit
from .removal import forward_kept, prepared_batch
from .runner import Batch, Job, Ray, run

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
    executor: str | Ray = "local",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy as tokens are removed in probe order, projection order (and class-space order, random order).

    Probes are fitted on ``train`` (per block output and token position, on the
    driver); orders and accuracy are measured on ``test`` (with ``executor``).
    ``class_space=True`` adds the paper's relevance map
    (:func:`vitlens_widgets.explain.relevance`), one gradient pass per image.
    ``random`` removes tokens in a random order per image, drawn from ``seed`` and
    the image's position in ``test``.

    Returns ``(curves, summary)``: ``curves`` has columns ``method, direction,
    fraction, accuracy``; ``summary`` has ``method, auc_negative,
    auc_positive, reference, p_negative, p_positive, images`` where the p-values
    are paired sign-flip tests over images of each method's per-image AUC (mean
    accuracy over the fractions) against the ``reference`` method's: the
    class-space map when computed (the paper's comparison), else the projection.

    Example:
        >>> curves, summary = probe_ranked_removal(Lens.demo(), vl.data.shapes(200, seed=5), vl.data.shapes(200, seed=2))
    """
    weights = fit_token_probes(lens, train, alpha)
    job = probe_removal_job(weights, fractions, class_space, n_permutations, batch_size, seed)
    return run(job, lens, test, executor, progress)


def probe_removal_job(
    weights: np.ndarray,
    fractions: Sequence[float] = FRACTIONS,
    class_space: bool = False,
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
) -> Job:
    """:func:`probe_ranked_removal`'s test side as a runner job, given probe ``weights`` (:func:`fit_token_probes`).

    Example:
        >>> job = probe_removal_job(fit_token_probes(lens, vl.data.shapes(200, seed=5)))
        >>> curves, summary = run(job, lens, vl.data.shapes(200, seed=2), executor="ray")
    """
    methods = ("probe", "projection", "random", *(("class_space",) if class_space else ()))
    fractions = tuple(float(f) for f in fractions)
    return Job(
        map=partial(_removal_hits, weights=weights, fractions=fractions, methods=methods, seed=seed),
        reduce=partial(_removal_curves, fractions=fractions, methods=methods, n_permutations=n_permutations, seed=seed),
        desc="probe-ranked removal",
        batch_size=batch_size,
    )


def random_scores(seed: int, index: np.ndarray, n_patches: int) -> np.ndarray:
    """``[B, n_patches]`` uniform scores: image ``i`` gets draws ``i * n_patches ...`` of one stream from ``seed``.

    So an image's random order depends on its position in the data, not on batching or executors.

    Example:
        >>> random_scores(0, np.array([0, 1]), 64).shape
        (2, 64)
    """
    rows = []
    for i in np.asarray(index):
        stream = np.random.PCG64(seed)  # what np.random.default_rng(seed) draws from
        stream.advance(int(i) * n_patches)  # one 64-bit draw per float64
        rows.append(np.random.Generator(stream).random(n_patches))
    return np.stack(rows) if rows else np.zeros((0, n_patches))


def _removal_hits(
    lens: Lens,
    _state: Any,
    batch: Batch,
    weights: np.ndarray,
    fractions: tuple[float, ...],
    methods: tuple[str, ...],
    seed: int,
) -> dict[str, np.ndarray]:
    """Per method: bool ``[B, directions, fractions]``, whether the model is right with those tokens removed."""
    from ..explain.evaluate import removal_order

    images, labels = batch.images, batch.labels
    layout = lens.tokens
    n_patches, n_prefix = layout.n_patches, layout.n_prefix
    traces = lens.trace_batch(images)
    x = prepared_batch(lens, images)
    hidden = torch.stack([t.hidden["resid"][1:, n_prefix:] for t in traces]).float().numpy()
    values = {
        "probe": -probe_rank_sum(weights, hidden, labels),
        "projection": -traces.rank(labels, "resid")[:, 1:, n_prefix:].sum(1),
        "random": random_scores(seed, batch.index, n_patches),
    }
    if "class_space" in methods:
        from ..explain.relevance import relevance

        values["class_space"] = np.stack(
            [relevance(lens, im, cls=int(y)).map.reshape(-1) for im, y in zip(images, labels)]
        )
    out = {}
    for name in methods:
        result = np.zeros((len(labels), len(DIRECTIONS), len(fractions)), bool)
        for d, direction in enumerate(DIRECTIONS):
            orders = np.stack([removal_order(row, n_prefix, direction == "positive") for row in values[name]])
            for f, fraction in enumerate(fractions):
                removed = int(fraction * n_patches + 0.5)
                if removed == 0:
                    result[:, d, f] = traces.predictions == labels
                    continue
                keep = np.ones((len(labels), layout.n_tokens), bool)
                np.put_along_axis(keep, orders[:, :removed], False, axis=1)
                _, output = forward_kept(lens, x, keep, layers=False)
                result[:, d, f] = output.argmax(-1) == labels
        out[f"hits/{name}"] = result
    return out


def _removal_curves(
    lens: Lens,
    columns: dict[str, np.ndarray],
    fractions: tuple[float, ...],
    methods: tuple[str, ...],
    n_permutations: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_image = {name: columns[f"hits/{name}"] for name in methods}
    curves = pd.DataFrame(
        [
            {"method": name, "direction": direction, "fraction": fraction, "accuracy": float(h[:, d, f].mean())}
            for name, h in per_image.items()
            for d, direction in enumerate(DIRECTIONS)
            for f, fraction in enumerate(fractions)
        ]
    )
    auc = {name: h.mean(-1) for name, h in per_image.items()}  # [images, 2]
    reference = "class_space" if "class_space" in methods else "projection"
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
