"""Relevance maps measured, not looked at: token-removal curves and agreement with true object masks.

    python -m vitlens_widgets.explain.evaluate [--images 200] [--out docs/relevance.md]

* **Perturbation test**: image tokens are removed from the sequence in order of
  relevance, least relevant first (*negative*: accuracy should stay high) or most
  relevant first (*positive*: accuracy should fall fast), at each fraction; the
  area under each accuracy curve (mean accuracy over the fractions) summarises it.
* **Mask agreement** (demo data has exact masks): *pointing game* = the most
  relevant token is an object token; *IoU* of the ``k`` most relevant tokens with
  the ``k`` object tokens.

The report ends with a diagnosis of the class-space map on the negative curve:
variants of the map and per-block statistics (:mod:`.diagnose`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analysis.identifiability import token_groups
from ..data.shapes import ShapesBatch, shapes
from ..engine.lens import Lens
from .relevance import METHODS, relevance

FRACTIONS = tuple(np.round(np.arange(0.0, 1.0, 0.1), 2))
DIRECTIONS = ("negative", "positive")


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

    def maps_for(i: int) -> dict[str, np.ndarray]:
        image, label = data.images[i], int(data.labels[i])
        return {m: relevance(lens, image, cls=label, method=m, seed=seed + i).map for m in methods}

    curves, summary, _ = score_maps(lens, data, maps_for, fractions, progress)
    return curves, summary


def score_maps(
    lens: Lens,
    data: ShapesBatch,
    maps_for: Callable[[int], dict[str, np.ndarray]],
    fractions: Sequence[float] = FRACTIONS,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`evaluate_relevance` for any maps: ``maps_for(i)`` gives image ``i``'s map per name.

    Also returns, per name, the per-image correctness ``bool [images, 2, fractions]``
    (directions negative, positive) for paired comparisons.
    """
    n_patches, n_prefix = lens.tokens.n_patches, lens.tokens.n_prefix
    correct: dict[str, list[np.ndarray]] = {}
    pointing: dict[str, float] = {}
    iou: dict[str, float] = {}
    for i in tqdm(range(len(data)), desc="relevance", disable=not progress):
        image, label = data.images[i], int(data.labels[i])
        on_object = token_groups(lens, data.masks[i])["object"][n_prefix:]
        for name, values in maps_for(i).items():
            top = np.argsort(-values.reshape(-1), kind="stable")
            pointing[name] = pointing.get(name, 0.0) + float(on_object[top[0]])
            k = max(1, int(on_object.sum()))
            chosen = np.zeros(n_patches, bool)
            chosen[top[:k]] = True
            iou[name] = iou.get(name, 0.0) + (chosen & on_object).sum() / (chosen | on_object).sum()
            hits = np.zeros((2, len(fractions)), bool)
            for d, direction in enumerate(DIRECTIONS):
                order = removal_order(values, n_prefix, most_relevant_first=direction == "positive")
                for f, fraction in enumerate(fractions):
                    drop = order[: int(fraction * n_patches + 0.5)].tolist()
                    trace = lens.trace(image, drop_tokens=drop) if drop else lens.trace(image)
                    hits[d, f] = trace.prediction.index == label
            correct.setdefault(name, []).append(hits)
    per_image = {name: np.stack(rows) for name, rows in correct.items()}
    counted = len(data)
    curves = pd.DataFrame(
        [
            {"method": name, "direction": direction, "fraction": fraction, "accuracy": hits[:, d, f].mean()}
            for name, hits in per_image.items()
            for d, direction in enumerate(DIRECTIONS)
            for f, fraction in enumerate(fractions)
        ]
    )
    summary = pd.DataFrame(
        [
            {
                "method": name,
                "auc_negative": hits[:, 0].mean(),
                "auc_positive": hits[:, 1].mean(),
                "pointing_game": pointing[name] / counted,
                "iou": iou[name] / counted,
                "images": counted,
            }
            for name, hits in per_image.items()
        ]
    )
    return curves, summary, per_image


def main(argv: list[str] | None = None) -> None:
    from ..analysis.report import markdown_table, publish
    from ..demo.train import TEST_SEED
    from .control import control_markdown
    from .diagnose import VARIANTS, block_statistics, diagnosis_markdown, variant_maps

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    lens = Lens.demo()
    data = shapes(args.images, seed=TEST_SEED)

    def maps_for(i: int) -> dict[str, np.ndarray]:
        image, label = data.images[i], int(data.labels[i])
        maps = {m: relevance(lens, image, cls=label, method=m, seed=i).map for m in METHODS}
        variants = variant_maps(lens, image, label)
        return maps | {name: variants[name] for name in VARIANTS if name not in maps}

    curves, summary, per_image = score_maps(lens, data, maps_for)
    main_curves = curves[curves.method.isin(METHODS)]
    wide = main_curves.pivot_table(index=["method", "direction"], columns="fraction", values="accuracy").reset_index()
    wide.columns = [str(c) for c in wide.columns]
    blocks, summed = block_statistics(lens, data)
    text = "\n".join(
        [
            "# Relevance maps on the demo model\n",
            f"Regenerate with `python -m vitlens_widgets.explain.evaluate --images {args.images} "
            f"--out docs/relevance.md` ({args.images} held-out images, data seed {TEST_SEED}; maps for the "
            "true class).\n",
            "AUC = mean accuracy over the removal fractions 0.0–0.9: higher is better for *negative* "
            "(least relevant removed first), lower is better for *positive* (most relevant first). "
            "Pointing game and IoU compare the maps with the exact object masks.\n",
            markdown_table(summary[summary.method.isin(METHODS)].reset_index(drop=True)),
            "\n## Accuracy by fraction of image tokens removed\n",
            markdown_table(wide),
            "",
            diagnosis_markdown(summary, per_image, curves, blocks, summed),
            control_markdown(per_image, summary),
        ]
    )
    publish(text, args.out)


if __name__ == "__main__":
    main()
