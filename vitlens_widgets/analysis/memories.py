"""Sublayer parameters read as key-value memories, projected onto the class embeddings.

For block ``b`` (timm naming):

* **MLP memories** (``kind="mlp"``): memory ``i`` has key ``fc1.weight[i]`` and
  value ``fc2.weight[:, i]``; its key coefficient for a token is the ``fc1``
  output ``i`` (before the activation function).
* **Attention memories** (``kind="attn"``): memory ``i`` has value
  ``proj.weight[:, i]``; its coefficient for a token is the ``proj`` input ``i``
  (the heads' outputs, concatenated).

A value is read in class space by the class embeddings ``E`` (the head's weight
matrix): ``E @ value``, without the final norm or bias, as in the paper. For
class-value agreement both are L2-normalised first, so scores are cosines.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..engine.lens import Lens
from ..engine.memories import check_kind, memory_projections
from ..engine.recipe import random_init_copy
from .identifiability import batch_token_groups, paired_sign_flip_test, token_groups
from .models import over_models
from .runner import Batch, Job, Ray, run


def top_classes_per_memory(lens: Lens, block: int, kind: str = "mlp", k: int = 5) -> pd.DataFrame:
    """The ``k`` classes each memory writes most strongly: columns ``memory, rank, class, name, score``.

    Example:
        >>> top_classes_per_memory(lens, block=6, k=3).query("memory == 0")
    """
    scores = memory_projections(lens.model, block, kind)  # [C, M]
    order = np.argsort(-scores, axis=0)[:k]  # [k, M]
    memories = np.broadcast_to(np.arange(scores.shape[1]), order.shape)
    return pd.DataFrame(
        {
            "memory": memories.T.ravel(),
            "rank": np.tile(np.arange(k), scores.shape[1]),
            "class": order.T.ravel(),
            "name": [lens.class_names[c] for c in order.T.ravel()],
            "score": np.take_along_axis(scores, order, axis=0).T.ravel(),
        }
    )


def top_memories_per_class(lens: Lens, block: int, kind: str = "mlp", k: int = 5) -> pd.DataFrame:
    """The ``k`` memories that write each class most strongly: columns ``class, name, rank, memory, score``.

    Example:
        >>> top_memories_per_class(lens, block=6).query("name == 'star'")
    """
    scores = memory_projections(lens.model, block, kind)
    order = np.argsort(-scores, axis=1)[:, :k]  # [C, k]
    classes = np.repeat(np.arange(scores.shape[0]), k)
    return pd.DataFrame(
        {
            "class": classes,
            "name": [lens.class_names[c] for c in classes],
            "rank": np.tile(np.arange(k), scores.shape[0]),
            "memory": order.ravel(),
            "score": np.take_along_axis(scores, order, axis=1).ravel(),
        }
    )


@over_models
def class_value_agreement(
    lens: Lens, kind: str = "mlp", random_model: nn.Module | None = None, seed: int = 0
) -> pd.DataFrame:
    """Per block: how well some memory writes each class, trained vs a random-init model.

    A class's score in a block is its best cosine similarity with any value
    vector; the trained and the random model are compared per block with a
    one-sided Wilcoxon signed-rank test, paired by class (trained > random).

    Returns columns ``block, kind, trained, random, statistic, p_value, classes``.

    Example:
        >>> class_value_agreement(lens, kind="attn")[["block", "trained", "random", "p_value"]]
    """
    from scipy.stats import wilcoxon

    check_kind(kind)
    baseline = random_model if random_model is not None else random_init_copy(lens.model, seed)
    rows = []
    for block in range(1, lens.depth + 1):
        trained = memory_projections(lens.model, block, kind, normalize=True).max(axis=1)
        random = memory_projections(baseline, block, kind, normalize=True).max(axis=1)
        test = wilcoxon(trained, random, alternative="greater")
        rows.append(
            {
                "block": block,
                "kind": kind,
                "trained": float(trained.mean()),
                "random": float(random.mean()),
                "statistic": float(test.statistic),
                "p_value": float(test.pvalue),
                "classes": len(trained),
            }
        )
    return pd.DataFrame(rows)


class KeyCapture:
    """Records every block's key coefficients during a forward pass (fc1 outputs, or proj inputs).

    Only forward passes of the thread that made it are recorded: a widget may trace the same
    model meanwhile from a kernel subshell (another thread), and its keys are not this analysis's.
    """

    def __init__(self, model: nn.Module, kind: str):
        self.kind = check_kind(kind)
        self.keys: list[torch.Tensor] = []
        self._thread = threading.get_ident()
        self._handles = []
        for block in model.blocks:
            if kind == "mlp":
                fc1 = getattr(block.mlp, "fc1", None)
                if not isinstance(fc1, nn.Linear):
                    raise ValueError("MLP memories need timm Mlp blocks with a linear fc1 layer")
                self._handles.append(fc1.register_forward_hook(lambda m, i, o: self._record(o)))
            else:
                self._handles.append(block.attn.proj.register_forward_pre_hook(lambda m, i: self._record(i[0])))

    def _record(self, keys: torch.Tensor) -> None:
        if threading.get_ident() == self._thread:
            self.keys.append(keys.detach())

    def __enter__(self) -> KeyCapture:
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()


KV_DEFINITIONS = ("text", "code")


@over_models
def key_value_agreement(
    lens: Lens,
    data: Any,
    kind: str = "mlp",
    top_memories: int = 5,
    top_classes: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    definition: str = "text",
    by_outcome: bool = False,
    n_permutations: int = 10_000,
    executor: str | Ray = "local",
) -> pd.DataFrame:
    """Per block and token group: do a token's most activated memories write its true class? With a paired test.

    For each token, take the ``top_memories`` memories with the largest key
    coefficients. ``definition="text"`` (the paper's wording): the token agrees
    when the true class is among the ``top_classes`` classes of any of them.
    ``definition="code"`` (the authors' ``src/memories.py``): it agrees when any
    of them is among the true class's ``top_classes`` memories (the memories whose
    values write that class most). Key coefficients are the ``fc1`` outputs (MLP)
    or the output projection's input (attention: the heads' mixed values, the
    authors' ``attn_weights @ values``).

    The baseline replaces the true class by a random other class, drawn once per
    image from ``seed`` and the image's position in the data (so batching and
    executors do not change it). ``by_outcome=True`` adds an ``outcome`` column
    and splits images the model classifies correctly from the others.
    ``p_value``: two-sided paired sign-flip permutation test over images of the
    agreement against the random-class baseline.

    Returns columns ``block, kind, tokens, [outcome,] agreement, random_class, p_value, images``.

    Example:
        >>> df = key_value_agreement(lens, vl.data.shapes(200, seed=2), kind="attn", definition="code", by_outcome=True)
        >>> df.query("tokens == 'image'").pivot(index="block", columns="outcome", values="agreement")
    """
    job = agreement_job(kind, top_memories, top_classes, batch_size, seed, definition, by_outcome, n_permutations)
    return run(job, lens, data, executor, progress)


def agreement_job(
    kind: str = "mlp",
    top_memories: int = 5,
    top_classes: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    definition: str = "text",
    by_outcome: bool = False,
    n_permutations: int = 10_000,
) -> Job:
    """:func:`key_value_agreement` as a runner job (memory projections computed once per worker).

    Example:
        >>> run(agreement_job("attn", definition="code"), lens, vl.data.shapes(50, seed=2), executor="ray")
    """
    check_kind(kind)
    if definition not in KV_DEFINITIONS:
        raise ValueError(f"definition must be 'text' or 'code', got {definition!r}")
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    return Job(
        map=partial(_agreement_partials, kind=kind, top_memories=top_memories, seed=seed, definition=definition),
        reduce=partial(_agreement_frame, kind=kind, by_outcome=by_outcome, n_permutations=n_permutations, seed=seed),
        setup=partial(_memory_classes, kind=kind, top_classes=top_classes, definition=definition),
        desc="key-value agreement",
        batch_size=batch_size,
    )


def _memory_classes(lens: Lens, kind: str, top_classes: int, definition: str) -> list[np.ndarray]:
    """Per block, for ``definition="text"``: the ``top_classes`` classes each memory writes most,
    ``[top_classes, memories]``; for ``"code"``: bool ``[C, memories]``, each class's ``top_classes`` memories."""
    tables = []
    for b in range(1, lens.depth + 1):
        scores = memory_projections(lens.model, b, kind)  # [C, M]
        if definition == "text":
            tables.append(np.argsort(-scores, axis=0)[:top_classes])
        else:
            member = np.zeros(scores.shape, bool)
            np.put_along_axis(member, np.argsort(-scores, axis=1)[:, :top_classes], True, axis=1)
            tables.append(member)
    return tables


def random_other_classes(labels: np.ndarray, index: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """A class other than each label, drawn from ``seed`` by position in the data (as one stream over all images).

    Example:
        >>> random_other_classes(np.array([3, 3]), np.array([0, 1]), 10, seed=0)  # never 3
    """
    offsets = np.random.default_rng(seed).integers(1, num_classes, int(index.max()) + 1)[index]
    return (labels + offsets) % num_classes


def _agreement_partials(
    lens: Lens, tables: list[np.ndarray], batch: Batch, kind: str, top_memories: int, seed: int, definition: str
) -> dict[str, np.ndarray]:
    """Per image and block: share of each token group's tokens that agree with the true / a random class."""
    labels = batch.labels
    others = random_other_classes(labels, batch.index, lens.num_classes, seed)
    with KeyCapture(lens.model, kind) as capture:  # the lens's own forward pass fires the hooks
        traces = lens.trace_batch(batch.images)
    groups = batch_token_groups(lens, batch.masks)  # group -> bool [B, T]
    names = [*token_groups(lens, None), "object", "context"]
    out = {f"{m}/{g}": np.full((len(batch), lens.depth), np.nan) for m in ("agreement", "random") for g in names}
    out["correct"] = traces.predictions == labels
    for b, keys in enumerate(capture.keys):
        active = keys.topk(top_memories, dim=-1).indices.cpu().numpy()  # [B, T, top_memories]
        if definition == "text":
            written = tables[b][:, active]  # [top_classes, B, T, top_memories]
            hit_true = (written == labels[None, :, None, None]).any(axis=(0, 3))  # [B, T]
            hit_random = (written == others[None, :, None, None]).any(axis=(0, 3))
        else:
            hit_true = np.take_along_axis(tables[b][labels][:, None, :], active, axis=2).any(-1)
            hit_random = np.take_along_axis(tables[b][others][:, None, :], active, axis=2).any(-1)
        for group, select in groups.items():  # share of the group's tokens, NaN for an image without any
            count = select.sum(-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"agreement/{group}"][:, b] = np.where(count > 0, (hit_true & select).sum(-1) / count, np.nan)
                out[f"random/{group}"][:, b] = np.where(count > 0, (hit_random & select).sum(-1) / count, np.nan)
    return out


def _agreement_frame(
    lens: Lens, columns: dict[str, np.ndarray], kind: str, by_outcome: bool, n_permutations: int, seed: int
) -> pd.DataFrame:
    outcomes = np.where(columns["correct"], "correct", "wrong")
    rows = []
    for key, agreement in columns.items():
        measure, _, group = key.partition("/")
        if measure != "agreement":
            continue
        random = columns[f"random/{group}"]
        present = ~np.isnan(agreement[:, 0])
        for outcome in ("correct", "wrong") if by_outcome else (None,):
            chosen = present & (outcomes == outcome) if outcome else present
            if not chosen.any():
                continue
            ours, baseline = agreement[chosen], random[chosen]
            _, p_values = paired_sign_flip_test(ours - baseline, n_permutations, seed)
            for b in range(lens.depth):
                rows.append(
                    {
                        "block": b + 1,
                        "kind": kind,
                        "tokens": group,
                        **({"outcome": outcome} if by_outcome else {}),
                        "agreement": float(ours[:, b].mean()),
                        "random_class": float(baseline[:, b].mean()),
                        "p_value": float(p_values[b]),
                        "images": int(chosen.sum()),
                    }
                )
    order = ["block", "tokens", "outcome"] if by_outcome else ["block", "tokens"]
    return pd.DataFrame(rows).sort_values(order, ignore_index=True)
