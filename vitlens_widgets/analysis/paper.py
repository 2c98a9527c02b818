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

Each is a runner job (per-image columns mapped over batches, tests in the reduce on
the driver), so ``executor="ray"`` runs its forward passes on a Ray actor pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..engine.lens import Lens
from ..engine.recipe import LensRecipe
from ..engine.trace import identifiability_from_rank, layer_numbers
from .identifiability import batch_token_groups, masked_token_mean, paired_effect_rows, paired_sign_flip_test
from .models import over_models, random_init_lens
from .runner import Batch, Job, Ray, run

ATTENTION_PERTURBATIONS: dict[str, dict[str, Any]] = {
    "self_only": {"attention": "self_only"},
    "no_cls": {"attention": "no_cls"},
}


def _token_means(values: dict[str, np.ndarray], groups: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per measure and token group: the mean over the group's tokens of ``[B, rows, T]`` values -> ``[B, rows]``."""
    return {
        f"{name}/{group}": masked_token_mean(v.astype(np.float32), select)
        for name, v in values.items()
        for group, select in groups.items()
    }


def _all_groups(lens: Lens, masks: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """:func:`batch_token_groups` with ``object``/``context`` always present (empty without masks), so every batch
    returns the same columns."""
    groups = batch_token_groups(lens, masks)
    for group in ("object", "context"):
        groups.setdefault(group, np.zeros((len(masks), lens.tokens.n_tokens), bool))
    return groups


def _need_masks(batch: Batch, what: str) -> None:
    if any(m is None for m in batch.masks):
        raise ValueError(f"{what} needs masks: give (image, label, mask) items or a ShapesBatch")


# --- identifiability against a random-init copy ----------------------------------------------
@over_models
def identifiability_vs_random(
    lens: Lens,
    data: Any,
    random_lens: Lens | None = None,
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    executor: str | Ray = "local",
) -> pd.DataFrame:
    """Per layer and token group (``cls``, ``image``): the trained model against a random-init copy.

    ``random_lens`` defaults to :func:`random_init_lens` of ``lens`` (timm's
    initialisation, ``seed``). Columns: ``layer, tokens, identifiability,
    random_identifiability, p_value`` (paired sign-flip test of the per-image
    mean identifiability, trained vs random), ``top1_rate, random_top1_rate``
    (share of the group's tokens whose true class is top-1, the paper's "rate"),
    ``images_with_top1, random_images_with_top1`` (image tokens only: share of
    images with at least one such token), ``images``. Both models trace the same
    batches in one pass over the data (on Ray, each actor rebuilds the random
    copy from its recipe).

    Example:
        >>> identifiability_vs_random(Lens.demo(), vl.data.shapes(200, seed=2)).query("tokens == 'image'")
    """
    random_lens = random_lens if random_lens is not None else random_init_lens(lens, seed)
    second = random_lens if executor == "local" else LensRecipe.of(random_lens)  # a local run uses it as it is
    return run(vs_random_job(second, n_permutations, batch_size, seed), lens, data, executor, progress)


def vs_random_job(random: Lens | LensRecipe, n_permutations: int = 10_000, batch_size: int = 64, seed: int = 0) -> Job:
    """:func:`identifiability_vs_random` as a runner job; ``random`` is the second lens, or its recipe (Ray).

    Example:
        >>> random = LensRecipe.of(random_init_lens(lens, seed=0))
        >>> run(vs_random_job(random), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    return Job(
        map=_vs_random_partials,
        reduce=partial(_vs_random_frame, n_permutations=n_permutations, seed=seed),
        setup=partial(_second_lens, second=random),
        desc="identifiability vs random init",
        batch_size=batch_size,
    )


def _second_lens(lens: Lens, second: Lens | LensRecipe) -> Lens:
    return second if isinstance(second, Lens) else second.build(device=lens.device)


def _vs_random_partials(lens: Lens, random_lens: Lens, batch: Batch) -> dict[str, np.ndarray]:
    out = {}
    for name, one in (("trained", lens), ("random", random_lens)):
        rank = one.trace_batch(batch.images).rank(batch.labels, "resid")
        top1 = np.where(rank < 0, np.nan, rank == 0)
        groups = {g: s for g, s in batch_token_groups(one, batch.masks).items() if g in ("cls", "image")}
        means = _token_means({"ident": identifiability_from_rank(rank, one.num_classes), "top1": top1}, groups)
        means["any_top1/image"] = (np.nan_to_num(top1) * groups["image"][:, None]).max(-1)
        out |= {f"{name}/{key}": value for key, value in means.items()}
    return out


def _vs_random_frame(lens: Lens, columns: dict[str, np.ndarray], n_permutations: int, seed: int) -> pd.DataFrame:
    rows = []
    layers = list(layer_numbers("resid", lens.depth))
    for group in ("cls", "image"):
        if f"trained/ident/{group}" not in columns:
            continue
        trained, random = columns[f"trained/ident/{group}"], columns[f"random/ident/{group}"]
        _, p_values = paired_sign_flip_test(trained - random, n_permutations, seed)
        any_top1 = columns.get(f"trained/any_top1/{group}")
        random_any = columns.get(f"random/any_top1/{group}")
        for r, layer in enumerate(layers):
            rows.append(
                {
                    "layer": layer,
                    "tokens": group,
                    "identifiability": float(trained[:, r].mean()),
                    "random_identifiability": float(random[:, r].mean()),
                    "p_value": float(p_values[r]),
                    "top1_rate": float(columns[f"trained/top1/{group}"][:, r].mean()),
                    "random_top1_rate": float(columns[f"random/top1/{group}"][:, r].mean()),
                    "images_with_top1": float(any_top1[:, r].mean()) if any_top1 is not None else np.nan,
                    "random_images_with_top1": float(random_any[:, r].mean()) if random_any is not None else np.nan,
                    "images": len(trained),
                }
            )
    return pd.DataFrame(rows)


# --- sublayer gain, object vs context -----------------------------------------------------------
@over_models
def sublayer_gain_by_location(
    lens: Lens,
    data: Any,
    kind: str = "attn",
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    executor: str | Ray = "local",
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
    return run(location_gain_job(kind, n_permutations, batch_size, seed), lens, data, executor, progress)


def location_gain_job(kind: str = "attn", n_permutations: int = 10_000, batch_size: int = 64, seed: int = 0) -> Job:
    """:func:`sublayer_gain_by_location` as a runner job.

    Example:
        >>> run(location_gain_job("mlp"), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    if kind not in ("attn", "mlp"):
        raise ValueError(f"kind must be 'attn' or 'mlp', got {kind!r}")
    return Job(
        map=partial(_location_gain_partials, kind=kind),
        reduce=partial(_location_gain_frame, kind=kind, n_permutations=n_permutations, seed=seed),
        desc=f"{kind} gain by location",
        batch_size=batch_size,
    )


def _location_gain_partials(lens: Lens, _state: Any, batch: Batch, kind: str) -> dict[str, np.ndarray]:
    _need_masks(batch, "object vs context")
    traces = lens.trace_batch(batch.images)
    index = batch.labels[:, None, None, None]
    update = np.take_along_axis(traces.logits(kind), index, -1)[..., 0]
    before = traces.logits("resid")[:, :-1] if kind == "attn" else traces.mid_logits()
    gain = update > np.take_along_axis(before, index, -1)[..., 0]
    groups = batch_token_groups(lens, batch.masks)
    return {g: masked_token_mean(gain.astype(np.float32), groups[g]) for g in ("object", "context")}


def _location_gain_frame(
    lens: Lens, columns: dict[str, np.ndarray], kind: str, n_permutations: int, seed: int
) -> pd.DataFrame:
    both = ~np.isnan(columns["object"]).any(1) & ~np.isnan(columns["context"]).any(1)
    obj, ctx = columns["object"][both], columns["context"][both]
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


# --- block-to-block change ------------------------------------------------------------------------
@over_models
def block_change_rate(
    lens: Lens, data: Any, batch_size: int = 64, progress: bool = True, executor: str | Ray = "local"
) -> pd.DataFrame:
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
    return run(change_rate_job(batch_size), lens, data, executor, progress)


def change_rate_job(batch_size: int = 64) -> Job:
    """:func:`block_change_rate` as a runner job.

    Example:
        >>> run(change_rate_job(), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    return Job(map=_change_rate_partials, reduce=_change_rate_frame, desc="block change rate", batch_size=batch_size)


def _change_rate_partials(lens: Lens, _state: Any, batch: Batch) -> dict[str, np.ndarray]:
    logits = lens.trace_batch(batch.images).logits("resid")  # [B, L+1, T, C]
    true = np.take_along_axis(logits, batch.labels[:, None, None, None], -1)[..., 0]
    top1 = logits.argmax(-1)
    values = {"increase": true[:, 1:] > true[:, :-1], "change": top1[:, 1:] != top1[:, :-1]}
    return _token_means(values, _all_groups(lens, batch.masks))


def _change_rate_frame(lens: Lens, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for group in [g for g in ("cls", "image", "object", "context") if f"increase/{g}" in columns]:
        increase, change = columns[f"increase/{group}"], columns[f"change/{group}"]
        present = ~np.isnan(increase).any(1)
        if not present.any():
            continue
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


# --- attention perturbations --------------------------------------------------------------------
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
    executor: str | Ray = "local",
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
    job = attention_perturbation_job(perturbations, tokens, n_permutations, batch_size, seed)
    return run(job, lens, data, executor, progress)


def attention_perturbation_job(
    perturbations: Mapping[str, Mapping[str, Any]] | None = None,
    tokens: str = "image",
    n_permutations: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
) -> Job:
    """:func:`attention_perturbation_test` as a runner job (each batch traced unperturbed and once per perturbation).

    Example:
        >>> run(attention_perturbation_job({"self_only": {"attention": "self_only"}}), lens, data, executor="ray")
    """
    chosen = tuple((name, dict(options)) for name, options in (perturbations or ATTENTION_PERTURBATIONS).items())
    return Job(
        map=partial(_perturbation_partials, perturbations=chosen, tokens=tokens),
        reduce=partial(
            _perturbation_frame, names=[n for n, _ in chosen], tokens=tokens, n_permutations=n_permutations, seed=seed
        ),
        desc="attention perturbations",
        batch_size=batch_size,
    )


def _perturbation_partials(
    lens: Lens, _state: Any, batch: Batch, perturbations: tuple[tuple[str, dict[str, Any]], ...], tokens: str
) -> dict[str, np.ndarray]:
    """Columns ``{k}/ident``, ``{k}/top1``, ``{k}/hit``: k = 0 unperturbed, k = 1.. each perturbation in order."""
    select = batch_token_groups(lens, batch.masks)[tokens]
    out = {}
    for k, options in enumerate([{}, *(options for _, options in perturbations)]):
        traces = lens.trace_batch(batch.images, **options)
        rank = traces.rank(batch.labels, "resid")
        out[f"{k}/ident"] = masked_token_mean(identifiability_from_rank(rank, lens.num_classes), select)
        out[f"{k}/top1"] = masked_token_mean(np.where(rank < 0, np.nan, rank == 0).astype(np.float32), select)
        out[f"{k}/hit"] = (traces.predictions == batch.labels).astype(np.float64)[:, None]
    return out


def _perturbation_frame(
    lens: Lens, columns: dict[str, np.ndarray], names: list[str], tokens: str, n_permutations: int, seed: int
) -> pd.DataFrame:
    base = {measure: columns[f"0/{measure}"] for measure in ("ident", "top1", "hit")}
    layers = list(layer_numbers("resid", lens.depth))
    rows = []
    for k, name in enumerate(names):
        perturbed = {measure: columns[f"{k + 1}/{measure}"] for measure in ("ident", "top1", "hit")}
        for row in paired_effect_rows(perturbed, base, layers, n_permutations, seed + k):
            rows.append({"perturbation": name, "layer": row["layer"], "tokens": tokens, **row})
    return pd.DataFrame(rows)


# --- the residual match, ours vs the authors' formulas ----------------------------------------------
RESIDUAL_MATCH_COLUMNS = ("none", "none_authors", "mlp_gain", "mlp_gain_authors")


@over_models
def residual_match_formulas(
    lens: Lens, data: Any, batch_size: int = 64, progress: bool = True, executor: str | Ray = "local"
) -> pd.DataFrame:
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
    return run(residual_match_job(batch_size), lens, data, executor, progress)


def residual_match_job(batch_size: int = 64) -> Job:
    """:func:`residual_match_formulas` as a runner job.

    Example:
        >>> run(residual_match_job(), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    return Job(map=_residual_match_partials, reduce=_residual_match_frame, desc="residual match", batch_size=batch_size)


def _residual_match_partials(lens: Lens, _state: Any, batch: Batch) -> dict[str, np.ndarray]:
    traces = lens.trace_batch(batch.images)
    resid, attn, mlp, mid = traces.logits("resid"), traces.logits("attn"), traces.logits("mlp"), traces.mid_logits()
    out, prev = resid[:, 1:].argmax(-1), resid[:, :-1].argmax(-1)
    a, m = attn.argmax(-1), mlp.argmax(-1)
    index = batch.labels[:, None, None, None]

    def true(x):
        return np.take_along_axis(x, index, -1)[..., 0]

    values = {
        "none": (out != prev) & (out != a) & (out != m),
        "none_authors": (out != prev) & (out != a),
        "mlp_gain": true(mlp) > true(mid),
        "mlp_gain_authors": true(mlp) > true(resid[:, :-1]),
    }
    select = batch_token_groups(lens, batch.masks)["image"]
    return {k: masked_token_mean(v.astype(np.float32), select) for k, v in values.items()}


def _residual_match_frame(lens: Lens, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({k: columns[k].mean(0) for k in RESIDUAL_MATCH_COLUMNS})
    frame.insert(0, "block", np.arange(1, lens.depth + 1))
    frame["images"] = len(columns["none"])
    return frame
