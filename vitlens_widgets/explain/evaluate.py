"""Relevance maps measured, not looked at: token-removal curves and agreement with true object masks.

    python -m vitlens_widgets.explain.evaluate [--images 200] [--out docs/relevance.md]

* **Perturbation test**: image tokens are removed from the sequence in order of
  relevance, least relevant first (*negative*: accuracy should stay high) or most
  relevant first (*positive*: accuracy should fall fast), at each fraction; the
  area under each accuracy curve (mean accuracy over the fractions) summarises it.
* **Mask agreement** (demo data has exact masks): *pointing game* = the most
  relevant token is an object token; *IoU* of the ``k`` most relevant tokens with
  the ``k`` object tokens.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analysis.identifiability import token_groups
from ..data.shapes import ShapesBatch, shapes
from ..engine.lens import Lens
from .relevance import METHODS, relevance

FRACTIONS = tuple(np.round(np.arange(0.0, 1.0, 0.1), 2))


def removal_order(values: np.ndarray, n_prefix: int, most_relevant_first: bool) -> np.ndarray:
    """Sequence indices of the image tokens, least (or most) relevant first; ties keep grid order."""
    flat = values.reshape(-1)
    order = np.argsort(-flat if most_relevant_first else flat, kind="stable")
    return order + n_prefix


def evaluate_relevance(
    lens: Lens,
    data: ShapesBatch,
    methods: Sequence[str] = METHODS,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy curves and mask agreement per method, for the true class of each image.

    Returns ``(curves, summary)``: ``curves`` has columns ``method, direction,
    fraction, accuracy``; ``summary`` has ``method, auc_negative, auc_positive,
    pointing_game, iou, images``.
    """
    n_patches, n_prefix = lens.tokens.n_patches, lens.tokens.n_prefix
    correct = {(m, d, f): 0 for m in methods for d in ("negative", "positive") for f in fractions}
    pointing = dict.fromkeys(methods, 0.0)
    iou = dict.fromkeys(methods, 0.0)
    counted = 0
    for i in tqdm(range(len(data)), desc="relevance", disable=not progress):
        image, label = data.images[i], int(data.labels[i])
        on_object = token_groups(lens, data.masks[i])["object"][n_prefix:]
        counted += 1
        for method in methods:
            values = relevance(lens, image, cls=label, method=method, seed=seed + i).map
            top = np.argsort(-values.reshape(-1), kind="stable")
            pointing[method] += float(on_object[top[0]])
            k = max(1, int(on_object.sum()))
            chosen = np.zeros(n_patches, bool)
            chosen[top[:k]] = True
            iou[method] += (chosen & on_object).sum() / (chosen | on_object).sum()
            for direction in ("negative", "positive"):
                order = removal_order(values, n_prefix, most_relevant_first=direction == "positive")
                for fraction in fractions:
                    drop = order[: int(fraction * n_patches + 0.5)].tolist()
                    trace = lens.trace(image, drop_tokens=drop) if drop else lens.trace(image)
                    correct[(method, direction, fraction)] += int(trace.prediction.index == label)
    curves = pd.DataFrame(
        [{"method": m, "direction": d, "fraction": f, "accuracy": c / counted} for (m, d, f), c in correct.items()]
    )
    summary = pd.DataFrame(
        [
            {
                "method": m,
                "auc_negative": curves[(curves.method == m) & (curves.direction == "negative")].accuracy.mean(),
                "auc_positive": curves[(curves.method == m) & (curves.direction == "positive")].accuracy.mean(),
                "pointing_game": pointing[m] / counted,
                "iou": iou[m] / counted,
                "images": counted,
            }
            for m in methods
        ]
    )
    return curves, summary


def main(argv: list[str] | None = None) -> None:
    from ..analysis.report import markdown_table
    from ..demo.train import TEST_SEED

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    lens = Lens.demo()
    curves, summary = evaluate_relevance(lens, shapes(args.images, seed=TEST_SEED))
    wide = curves.pivot_table(index=["method", "direction"], columns="fraction", values="accuracy").reset_index()
    wide.columns = [str(c) for c in wide.columns]
    text = "\n".join(
        [
            "# Relevance maps on the demo model\n",
            f"Regenerate with `python -m vitlens_widgets.explain.evaluate --images {args.images}` "
            f"({args.images} held-out images, data seed {TEST_SEED}; maps for the true class).\n",
            "AUC = mean accuracy over the removal fractions 0.0–0.9: higher is better for *negative* "
            "(least relevant removed first), lower is better for *positive* (most relevant first). "
            "Pointing game and IoU compare the maps with the exact object masks.\n",
            markdown_table(summary),
            "\n## Accuracy by fraction of image tokens removed\n",
            markdown_table(wide),
            "",
        ]
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
