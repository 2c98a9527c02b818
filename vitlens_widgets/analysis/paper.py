"""The paper's remaining dataset findings, measured its way: each a tidy DataFrame with its statistical test.

* :func:`identifiability_vs_random`: identifiability per layer against a random-init
  copy of the same architecture, plus the paper's summary rates (share of image
  tokens whose true class is top-1; share of images with at least one such token).
* :func:`sublayer_gain_by_location`: the attention (or MLP) "class similarity
  change rate" for object vs context tokens, per block.
* :func:`block_change_rate`: from one block to the next, the share of tokens whose
  true-class logit rises (the authors' measure) and whose top-1 class changes.
* :func:`attention_perturbation_test`: self-only attention and no attention to
  [CLS], with the paper's metric (top-1 rate) beside the mean identifiability.

Every test is paired by image: the per-image difference (mean over the image's
tokens) is tested with a two-sided sign-flip permutation test; with 10,000
permutations the smallest p-value is 1/10,001 (reported as "≤ 1e-4").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from ..engine.trace import identifiability_from_rank, layer_numbers
from .identifiability import batch_token_groups, labelled_batches, masked_token_mean, paired_sign_flip_test
from .models import over_models, random_init_lens

ATTENTION_PERTURBATIONS: dict[str, dict[str, Any]] = {
    "self_only": {"attention": "self_only"},
    "no_cls": {"attention": "no_cls"},
}


def _token_means(values: dict[str, np.ndarray], groups: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Per measure and token group: the mean over the group's tokens of ``[B, rows, T]`` values -> ``[B, rows]``."""
    return {
        (name, group): masked_token_mean(v.astype(np.float32), select)
        for name, v in values.items()
        for group, select in groups.items()
    }


def _stream(lens: Lens, data: Any, measure, batch_size: int, progress: bool, desc: str, **perturbation: Any):
    """Concatenate per-image measures ``{key: [B, rows]}`` over the data."""
    chunks: dict[Any, list[np.ndarray]] = {}
    for traces, labels, masks in labelled_batches(lens, data, batch_size, progress, desc, **perturbation):
        for key, value in measure(traces, labels, masks).items():
            chunks.setdefault(key, []).append(value)
    return {key: np.concatenate(v) for key, v in chunks.items()}


def _rank_measures(lens: Lens):
    def measure(traces, labels, masks):
        rank = traces.rank(labels, "resid")
        ident = identifiability_from_rank(rank, lens.num_classes)
        top1 = np.where(rank < 0, np.nan, rank == 0)
        means = _token_means({"ident": ident, "top1": top1}, batch_token_groups(lens, masks))
        means[("any_top1", "image")] = (np.nan_to_num(top1) * batch_token_groups(lens, masks)["image"][:, None]).max(-1)
        return means

    return measure


@over_models
def identifiability_vs_random(
    lens: Lens,
    data: Any,
    random_lens: Lens | None = None,
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Per layer and token group (``cls``, ``image``): the trained model against a random-init copy.

    ``random_lens`` defaults to :func:`random_init_lens` of ``lens`` (timm's
    initialisation, ``seed``). Columns: ``layer, tokens, identifiability,
    random_identifiability, p_value`` (paired sign-flip test of the per-image
    mean identifiability, trained vs random), ``top1_rate, random_top1_rate``
    (share of the group's tokens whose true class is top-1, the paper's "rate"),
    ``images_with_top1, random_images_with_top1`` (image tokens only: share of
    images with at least one such token), ``images``.

    Example:
        >>> identifiability_vs_random(Lens.demo(), vl.data.shapes(200, seed=2)).query("tokens == 'image'")
    """
    random_lens = random_lens if random_lens is not None else random_init_lens(lens, seed)
    trained = _stream(lens, data, _rank_measures(lens), batch_size, progress, "identifiability (trained)")
    random = _stream(random_lens, data, _rank_measures(random_lens), batch_size, progress, "identifiability (random)")
    rows = []
    layers = list(layer_numbers("resid", lens.depth))
    for group in ("cls", "image"):
        if ("ident", group) not in trained:
            continue
        diff = trained[("ident", group)] - random[("ident", group)]
        _, p_values = paired_sign_flip_test(diff, n_permutations, seed)
        for r, layer in enumerate(layers):
            any_top1 = trained.get(("any_top1", group))
            random_any = random.get(("any_top1", group))
            rows.append(
                {
                    "layer": layer,
                    "tokens": group,
                    "identifiability": float(trained[("ident", group)][:, r].mean()),
                    "random_identifiability": float(random[("ident", group)][:, r].mean()),
                    "p_value": float(p_values[r]),
                    "top1_rate": float(trained[("top1", group)][:, r].mean()),
                    "random_top1_rate": float(random[("top1", group)][:, r].mean()),
                    "images_with_top1": float(any_top1[:, r].mean()) if any_top1 is not None else np.nan,
                    "random_images_with_top1": float(random_any[:, r].mean()) if random_any is not None else np.nan,
                    "images": len(diff),
                }
            )
    return pd.DataFrame(rows)


@over_models
def sublayer_gain_by_location(
    lens: Lens,
    data: Any,
    kind: str = "attn",
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Per block: share of object vs context tokens whose sublayer update raises the true class, with a paired test.

    A token "gains" when its ``kind`` update (``"attn"`` or ``"mlp"``), read
    out in class space, gives the true class a larger logit than the stream
    the sublayer reads (for ``attn``: the block's input; for ``mlp``: the stream
    after the block's attention) — the paper's class similarity change rate,
    as in :func:`~vitlens_widgets.analysis.sublayer_contributions`. Shares are
    per image (over its object, resp. context, tokens), then averaged; the
    difference is tested per block with a paired sign-flip test over images.

    Returns columns ``block, kind, object, context, difference, p_value, images``.

    Example:
        >>> sublayer_gain_by_location(Lens.demo(), vl.data.shapes(200, seed=2), kind="attn")
    """
    if kind not in ("attn", "mlp"):
        raise ValueError(f"kind must be 'attn' or 'mlp', got {kind!r}")

    def measure(traces, labels, masks):
        if any(m is None for m in masks):
            raise ValueError("object vs context needs masks: give (image, label, mask) items or a ShapesBatch")
        index = labels[:, None, None, None]
        update = np.take_along_axis(traces.logits(kind), index, -1)[..., 0]
        before = traces.logits("resid")[:, :-1] if kind == "attn" else traces.mid_logits()
        gain = update > np.take_along_axis(before, index, -1)[..., 0]
        groups = batch_token_groups(lens, masks)
        return {g: masked_token_mean(gain.astype(np.float32), groups[g]) for g in ("object", "context")}

    per = _stream(lens, data, measure, batch_size, progress, f"{kind} gain by location")
    both = ~np.isnan(per["object"]).any(1) & ~np.isnan(per["context"]).any(1)
    obj, ctx = per["object"][both], per["context"][both]
    observed, p_values = paired_sign_flip_test(obj - ctx, n_permutations, seed)
    return pd.DataFrame(
        {
            "block": np.arange(1, lens.depth + 1),
            "kind": kind,
            "object": obj.mean(0),
            "context": ctx.mean(0),
            "difference": observed,
            "p_value": p_values,
            "images": int(both.sum()),
        }
    )


@over_models
def block_change_rate(lens: Lens, data: Any, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Per block and token group: how the residual stream's class reading changes across the block.

    * ``logit_increase_rate``: share of tokens whose true-class logit is larger
      after the block than before it (the authors' block-to-block change rate);
    * ``top1_change_rate``: share of tokens whose top-1 class after the block
      differs from the one before it.

    Shares are per image (over the group's tokens), then averaged over images.
    Returns columns ``block, tokens, logit_increase_rate, top1_change_rate, images``.

    Example:
        >>> block_change_rate(Lens.demo(), vl.data.shapes(200, seed=2)).query("tokens == 'image'")
    """

    def measure(traces, labels, masks):
        logits = traces.logits("resid")  # [B, L+1, T, C]
        true = np.take_along_axis(logits, labels[:, None, None, None], -1)[..., 0]
        top1 = logits.argmax(-1)
        values = {"increase": true[:, 1:] > true[:, :-1], "change": top1[:, 1:] != top1[:, :-1]}
        return _token_means(values, batch_token_groups(lens, masks))

    per = _stream(lens, data, measure, batch_size, progress, "block change rate")
    rows = []
    for group in [g for g in ("cls", "image", "object", "context") if ("increase", g) in per]:
        increase, change = per[("increase", group)], per[("change", group)]
        present = ~np.isnan(increase).any(1)
        for b in range(lens.depth):
            rows.append(
                {
                    "block": b + 1,
                    "tokens": group,
                    "logit_increase_rate": float(increase[present, b].mean()),
                    "top1_change_rate": float(change[present, b].mean()),
                    "images": int(present.sum()),
                }
            )
    return pd.DataFrame(rows).sort_values(["block", "tokens"], ignore_index=True)


@over_models
def attention_perturbation_test(
    lens: Lens,
    data: Any,
    perturbations: Mapping[str, Mapping[str, Any]] | None = None,
    tokens: str = "image",
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Attention perturbations against the unperturbed model: top-1 rate, identifiability and accuracy, paired tests.

    ``perturbations`` maps a name to trace options applied to every image
    (default: ``self_only`` and ``no_cls`` in every block). Per layer, for the
    ``tokens`` group: ``top1_rate`` (share of tokens whose true class is top-1,
    the paper's metric) and ``identifiability``, each beside its unperturbed
    ``baseline_*`` and the p-value of a paired sign-flip test over images;
    ``accuracy`` of the model's output with ``baseline_accuracy`` and
    ``p_accuracy`` (the same test on per-image correctness).

    Example:
        >>> attention_perturbation_test(Lens.demo(), vl.data.shapes(200, seed=2)).query("layer == 6")
    """
    chosen = dict(perturbations or ATTENTION_PERTURBATIONS)

    def measure(traces, labels, masks):
        rank = traces.rank(labels, "resid")
        select = batch_token_groups(lens, masks)[tokens]
        ident = identifiability_from_rank(rank, lens.num_classes)
        return {
            "ident": masked_token_mean(ident, select),
            "top1": masked_token_mean(np.where(rank < 0, np.nan, rank == 0).astype(np.float32), select),
            "hit": (traces.predictions == labels).astype(np.float64)[:, None],
        }

    base = _stream(lens, data, measure, batch_size, progress, "unperturbed")
    rows = []
    for k, (name, options) in enumerate(chosen.items()):
        perturbed = _stream(lens, data, measure, batch_size, progress, name, **options)
        _, p_top1 = paired_sign_flip_test(perturbed["top1"] - base["top1"], n_permutations, seed + k)
        _, p_ident = paired_sign_flip_test(perturbed["ident"] - base["ident"], n_permutations, seed + k)
        _, p_acc = paired_sign_flip_test(perturbed["hit"] - base["hit"], n_permutations, seed + k)
        for r, layer in enumerate(layer_numbers("resid", lens.depth)):
            rows.append(
                {
                    "perturbation": name,
                    "layer": layer,
                    "tokens": tokens,
                    "top1_rate": float(perturbed["top1"][:, r].mean()),
                    "baseline_top1_rate": float(base["top1"][:, r].mean()),
                    "p_top1": float(p_top1[r]),
                    "identifiability": float(perturbed["ident"][:, r].mean()),
                    "baseline_identifiability": float(base["ident"][:, r].mean()),
                    "p_identifiability": float(p_ident[r]),
                    "accuracy": float(perturbed["hit"].mean()),
                    "baseline_accuracy": float(base["hit"].mean()),
                    "p_accuracy": float(p_acc[0]),
                    "images": len(base["hit"]),
                }
            )
    return pd.DataFrame(rows)


@over_models
def residual_match_formulas(lens: Lens, data: Any, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Per block, image tokens: the "none" share of the residual match and the MLP gain rate, ours vs the authors' code.

    * ``none``: the block output's top-1 class matches none of the attention
      update's, the MLP update's and the block input's top-1 (ours, as in
      :func:`~vitlens_widgets.analysis.sublayer_contributions`);
      ``none_authors``: the authors' formula, which tests the attention update
      twice and never the MLP's, so MLP-made tokens count as "composition".
    * ``mlp_gain``: the MLP update raises the true logit above the stream the
      MLP reads (after attention, ours); ``mlp_gain_authors``: above the block
      input, as in the authors' code.

    Returns columns ``block, none, none_authors, mlp_gain, mlp_gain_authors, images``.

    Example:
        >>> residual_match_formulas(vl.Lens.demo(), vl.data.shapes(200, seed=2))[["block", "none", "none_authors"]]
    """

    def measure(traces, labels, masks):
        resid, attn, mlp, mid = traces.logits("resid"), traces.logits("attn"), traces.logits("mlp"), traces.mid_logits()
        out, prev = resid[:, 1:].argmax(-1), resid[:, :-1].argmax(-1)
        a, m = attn.argmax(-1), mlp.argmax(-1)
        index = labels[:, None, None, None]

        def true(x):
            return np.take_along_axis(x, index, -1)[..., 0]

        values = {
            "none": (out != prev) & (out != a) & (out != m),
            "none_authors": (out != prev) & (out != a),
            "mlp_gain": true(mlp) > true(mid),
            "mlp_gain_authors": true(mlp) > true(resid[:, :-1]),
        }
        select = batch_token_groups(lens, masks)["image"]
        return {k: masked_token_mean(v.astype(np.float32), select) for k, v in values.items()}

    per = _stream(lens, data, measure, batch_size, progress, "residual match")
    frame = pd.DataFrame({k: v.mean(0) for k, v in per.items()})
    frame.insert(0, "block", np.arange(1, lens.depth + 1))
    frame["images"] = len(per["none"])
    return frame
