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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analysis.identifiability import token_groups
from ..analysis.runner import Batch, Job, Ray, run
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
    data: Any,
    methods: Sequence[str] = METHODS,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    progress: bool = True,
    executor: str | Ray = "local",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy curves and mask agreement per method, for the true class of each image.

    ``data``: labelled images with masks (a ``ShapesBatch``, an image folder with
    masks, ...); the map of image ``i`` uses seed ``seed + i``. ``executor="ray"``
    computes the maps and removal curves on a Ray actor pool.

    Returns ``(curves, summary)``: ``curves`` has columns ``method, direction,
    fraction, accuracy``; ``summary`` has ``method, auc_negative, auc_positive,
    pointing_game, iou, images``.

    Example:
        >>> curves, summary = evaluate_relevance(vl.Lens.demo(), vl.data.shapes(50, seed=2), methods=["class_space"])
    """
    curves, summary, _ = run(relevance_job(methods, fractions, seed), lens, data, executor, progress)
    return curves, summary


def relevance_job(methods: Sequence[str] = METHODS, fractions: Sequence[float] = FRACTIONS, seed: int = 0) -> Job:
    """:func:`evaluate_relevance` as a runner job; reduces to ``(curves, summary, per-image correctness)``.

    Example:
        >>> curves, summary, per_image = run(relevance_job(["class_space"]), lens, vl.data.shapes(20, seed=2))
    """
    return Job(
        map=partial(_relevance_partials, methods=tuple(methods), fractions=tuple(fractions), seed=seed),
        reduce=partial(_relevance_frames, fractions=tuple(fractions)),
        desc="relevance",
        batch_size=8,
    )


def _relevance_partials(
    lens: Lens, _state: Any, batch: Batch, methods: Sequence[str], fractions: Sequence[float], seed: int
) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for image, label, mask, i in zip(batch.images, batch.labels.tolist(), batch.masks, batch.index.tolist()):
        if mask is None:
            raise ValueError("evaluating relevance maps needs masks: give (image, label, mask) items or a ShapesBatch")
        maps = {m: relevance(lens, image, cls=label, method=m, seed=seed + i).map for m in methods}
        for name, (pointing, iou, hits) in score_image(lens, image, label, mask, maps, fractions).items():
            out.setdefault(f"pointing/{name}", []).append(pointing)
            out.setdefault(f"iou/{name}", []).append(iou)
            out.setdefault(f"hits/{name}", []).append(hits)
    return {key: np.array(values) for key, values in out.items()}


def _relevance_frames(
    lens: Lens, columns: dict[str, np.ndarray], fractions: Sequence[float]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    names = [key.partition("/")[2] for key in columns if key.startswith("hits/")]
    return score_frames(
        {n: columns[f"hits/{n}"] for n in names},
        {n: float(columns[f"pointing/{n}"].sum()) for n in names},
        {n: float(columns[f"iou/{n}"].sum()) for n in names},
        fractions,
        len(columns["index"]),
    )


def score_image(
    lens: Lens,
    image: Any,
    label: int,
    mask: np.ndarray,
    maps: dict[str, np.ndarray],
    fractions: Sequence[float] = FRACTIONS,
) -> dict[str, tuple[float, float, np.ndarray]]:
    """Per map name: pointing game hit, IoU with the object tokens, and correctness ``bool [2, fractions]``.

    Example:
        >>> score_image(lens, image, label, mask, {"random": np.random.rand(*lens.tokens.grid)})["random"][2]
    """
    n_patches, n_prefix = lens.tokens.n_patches, lens.tokens.n_prefix
    on_object = token_groups(lens, mask)["object"][n_prefix:]
    scores = {}
    for name, values in maps.items():
        top = np.argsort(-values.reshape(-1), kind="stable")
        k = max(1, int(on_object.sum()))
        chosen = np.zeros(n_patches, bool)
        chosen[top[:k]] = True
        hits = np.zeros((2, len(fractions)), bool)
        for d, direction in enumerate(DIRECTIONS):
            order = removal_order(values, n_prefix, most_relevant_first=direction == "positive")
            for f, fraction in enumerate(fractions):
                drop = order[: int(fraction * n_patches + 0.5)].tolist()
                trace = lens.trace(image, drop_tokens=drop) if drop else lens.trace(image)
                hits[d, f] = trace.prediction.index == label
        iou = (chosen & on_object).sum() / (chosen | on_object).sum()
        scores[name] = (float(on_object[top[0]]), float(iou), hits)
    return scores


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
    correct: dict[str, list[np.ndarray]] = {}
    pointing: dict[str, float] = {}
    iou: dict[str, float] = {}
    for i in tqdm(range(len(data)), desc="relevance", disable=not progress):
        image, label = data.images[i], int(data.labels[i])
        for name, (hit, overlap, hits) in score_image(
            lens, image, label, data.masks[i], maps_for(i), fractions
        ).items():
            pointing[name] = pointing.get(name, 0.0) + hit
            iou[name] = iou.get(name, 0.0) + overlap
            correct.setdefault(name, []).append(hits)
    per_image = {name: np.stack(rows) for name, rows in correct.items()}
    return score_frames(per_image, pointing, iou, fractions, len(data))


def score_frames(
    per_image: dict[str, np.ndarray],
    pointing: dict[str, float],
    iou: dict[str, float],
    fractions: Sequence[float],
    counted: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """``(curves, summary, per_image)`` from per-image correctness and summed pointing / IoU scores per map name."""
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
