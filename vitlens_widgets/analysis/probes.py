"""Linear probes vs the training-free class-space projection.

A probe is a ridge regression from one token's hidden state at one layer to a
±1 coding of the classes (prediction: the highest score), fitted per layer and
per token position, as in the paper. Accuracy counts a hit only when the true
class scores strictly highest: a tie for first is a miss, for probes and the
projection alike. Identifiability keeps the engine's rank (ties share the
better rank). The projection needs no training: it is the
model's own norm and head. Both are scored on the same held-out tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..engine.lens import Lens
from ..engine.trace import identifiability_from_rank, layer_numbers, rank_of
from .models import over_models
from .runner import iter_labelled


def ridge_fit(features: np.ndarray, targets: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Weights ``[D + 1, C]`` (last row: bias, not penalised) of ridge regression in closed form.

    ``features`` may carry leading batch axes (``[..., n, D]``, one fit per
    leading index, solved in one call); the weights then are ``[..., D + 1, C]``.

    Example:
        >>> features, targets = np.random.default_rng(0).normal(size=(50, 8)), np.eye(3)[np.arange(50) % 3]
        >>> weights = ridge_fit(features, targets, alpha=1.0)  # [9, 3]
        >>> scores = features @ weights[:-1] + weights[-1]
    """
    X = torch.from_numpy(np.asarray(features, np.float64))
    X = torch.cat([X, torch.ones((*X.shape[:-1], 1), dtype=X.dtype)], dim=-1)
    Xt = X.transpose(-1, -2)
    penalty = alpha * torch.eye(X.shape[-1], dtype=X.dtype)
    penalty[-1, -1] = 0.0
    Y = torch.from_numpy(np.asarray(targets, np.float64))
    # torch, not numpy: its thread pool is the one the caller sized (numpy's BLAS can oversubscribe shared cores).
    # Cholesky, not linalg.solve: the system is symmetric positive definite, and batched LU solves with several
    # threads can fail on MKL (pytorch/pytorch#142815).
    return torch.cholesky_solve(Xt @ Y, torch.linalg.cholesky(Xt @ X + penalty)).numpy()


def ridge_scores(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    return features.astype(np.float64) @ weights[:-1] + weights[-1]


def _hidden_and_logits(lens: Lens, data: Any, site: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states ``[n, rows, T, D]``, projected logits ``[n, rows, T, C]`` and labels ``[n]``."""
    items = list(iter_labelled(data))
    batch = lens.trace_batch([item[0] for item in items])
    hidden = np.stack([t.hidden_states(site) for t in batch])
    return hidden, batch.logits(site), np.array([item[1] for item in items])


@over_models
def probe_vs_projection(
    lens: Lens,
    train: Any,
    test: Any,
    site: str = "resid",
    alpha: float = 1.0,
    train_sizes: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Accuracy and identifiability per layer and token kind, for ridge probes and for the projection.

    Probes are fitted per layer and token position on ``train`` (the first
    ``n`` images for each ``n`` in ``train_sizes``, default: all) and scored on
    ``test``, like the projection. Token kinds: ``cls`` and ``image`` (the mean
    over patch positions). Returns columns ``layer, tokens, method, train_images,
    accuracy, identifiability`` (the projection's rows have ``train_images = 0``).

    Example:
        >>> probe_vs_projection(lens, vl.data.shapes(200, seed=5), vl.data.shapes(300, seed=2), train_sizes=[20, 200])
    """
    train_hidden, _, train_labels = _hidden_and_logits(lens, train, site)
    test_hidden, test_logits, test_labels = _hidden_and_logits(lens, test, site)
    n_classes, layout = lens.num_classes, lens.tokens
    sizes = sorted(set(train_sizes or [len(train_labels)]))
    if sizes[-1] > len(train_labels) or sizes[0] < 1:
        raise ValueError(f"train_sizes must be between 1 and {len(train_labels)}, got {sizes}")
    kinds = ({"cls": [layout.prefix.index("cls")]} if "cls" in layout.prefix else {}) | {
        "image": list(range(layout.n_prefix, layout.n_tokens))
    }
    rows = []
    for layer_row, layer in enumerate(layer_numbers(site, lens.depth)):
        for kind, positions in kinds.items():
            rows.append(_row(layer, kind, "projection", 0, test_logits[:, layer_row, positions], test_labels))
            for size in sizes:
                targets = -np.ones((size, n_classes))
                targets[np.arange(size), train_labels[:size]] = 1.0
                scores = np.stack(
                    [
                        ridge_scores(
                            ridge_fit(train_hidden[:size, layer_row, t], targets, alpha), test_hidden[:, layer_row, t]
                        )
                        for t in positions
                    ],
                    axis=1,
                )
                rows.append(_row(layer, kind, "probe", size, scores, test_labels))
    return pd.DataFrame(rows)


def strict_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool ``[n, ...]``: the true class scores strictly above every other class (a tie for first is a miss).

    ``scores`` is ``[n, ..., C]``, ``labels`` ``[n]``. Plain ``argmax`` would break
    ties by class index, which credits whichever class comes first; a constant
    probe (e.g. at layer 0, where the [CLS] input is the same for every image)
    would otherwise score the shares of its tied classes.
    """
    index = labels.reshape(labels.shape + (1,) * (scores.ndim - labels.ndim))
    target = np.take_along_axis(scores, index, axis=-1)
    return np.count_nonzero(scores >= target, axis=-1) == 1


def _row(layer: int, kind: str, method: str, size: int, scores: np.ndarray, labels: np.ndarray) -> dict:
    ranks = rank_of(scores, labels)
    return {
        "layer": layer,
        "tokens": kind,
        "method": method,
        "train_images": size,
        "accuracy": float(strict_hits(scores, labels).mean()),
        "identifiability": float(identifiability_from_rank(ranks, scores.shape[-1]).mean(dtype=np.float64)),
    }


def images_to_match(df: pd.DataFrame, tokens: str = "cls") -> pd.DataFrame:
    """Per layer: the fewest training images with which a probe reaches the projection's accuracy (NaN: never).

    ``df`` comes from :func:`probe_vs_projection`; returns columns ``layer, projection_accuracy, images_needed``.

    Example:
        >>> train, test = vl.data.shapes(200, seed=5), vl.data.shapes(300, seed=2)
        >>> images_to_match(probe_vs_projection(lens, train, test, train_sizes=[20, 200]), tokens="cls")
    """
    out = []
    for layer, part in df[df.tokens == tokens].groupby("layer"):
        target = part[part.method == "projection"].accuracy.item()
        probes = part[(part.method == "probe") & (part.accuracy >= target)]
        out.append(
            {
                "layer": layer,
                "projection_accuracy": target,
                "images_needed": probes.train_images.min() if len(probes) else np.nan,
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    """``python -m vitlens_widgets.analysis.probes``: the probe-vs-projection tables for the demo model."""
    import argparse
    from pathlib import Path

    from ..data.shapes import shapes
    from ..demo.train import TEST_SEED
    from .report import markdown_table, publish

    p = argparse.ArgumentParser(description="Linear probes vs class-space projection on the demo model")
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--train-sizes", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    train_seed = 5  # fresh images: neither the model's training, validation nor test seeds
    lens = Lens.demo()
    df = probe_vs_projection(
        lens,
        shapes(max(args.train_sizes), seed=train_seed),
        shapes(args.test_images, seed=TEST_SEED),
        train_sizes=args.train_sizes,
    )
    parts = [
        "# Linear probes vs class-space projection (demo model)\n",
        f"Regenerate with `python -m vitlens_widgets.analysis.probes` (ridge, alpha 1, one probe per layer and token "
        f"position, trained on the first n of {max(args.train_sizes)} fresh images (data seed {train_seed}), tested on "
        f"{args.test_images} held-out images (seed {TEST_SEED})). Top-1 accuracy of the true class; a tie for first "
        "counts as a miss. At layer 0 the [CLS] input is the same for every image, so a [CLS] probe there is constant: "
        "it scores the test share of the class it ranks first, or 0 when classes tie for first.\n",
    ]
    for kind in ("cls", "image"):
        wide = df[df.tokens == kind].pivot_table(index="layer", columns=["method", "train_images"], values="accuracy")
        wide.columns = [f"{m} n={n}" if m == "probe" else "projection" for m, n in wide.columns]
        parts += [
            f"\n## {'[CLS]' if kind == 'cls' else 'image tokens (mean over positions)'}\n",
            markdown_table(wide.reset_index()),
        ]
    parts += ["\n## Training images a [CLS] probe needs to match the projection\n", markdown_table(images_to_match(df))]
    text = "\n".join(parts) + "\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
