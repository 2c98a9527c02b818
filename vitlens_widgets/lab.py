"""Built-in checks for the course lab (``notebooks/03_course_lab.ipynb``).

Each ``check_*`` function compares a student's answer with what the engine
computes and returns a :class:`Verdict`: true only for a right answer, shown in
the notebook as one line (right; not quite, with a hint; or not answered yet).
None of them raises on a wrong or missing answer, so a half-finished lab still
runs top to bottom.

Example:
    >>> from vitlens_widgets import lab
    >>> lab.check_sublayer("mlp", trace, cls=3, block=6)
    ✓ Right: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine.lens import Lens
from .engine.trace import Trace, identifiability_from_rank, rank_of


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``bool(verdict)`` is whether the answer is right; its repr is the message.

    Example:
        >>> verdict = check_sublayer("mlp", trace, cls=trace.prediction.index, block=6)
        >>> verdict.ok, verdict.message  # the same as bool(verdict), repr(verdict)
    """

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message


NOT_ANSWERED = Verdict(False, "… Not answered yet: replace the ... with your answer and run the cell again.")


def _verdict(ok: bool, right: str, hint: str) -> Verdict:
    return Verdict(ok, f"✓ Right: {right}" if ok else f"✗ Not quite. {hint}")


def _missing(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def first_top1_layer(trace: Trace, cls: int, token: int = 0) -> int | None:
    """The first residual-stream layer at which ``token`` ranks ``cls`` first (``None`` if never).

    Example:
        >>> first_top1_layer(trace, trace.prediction.index)  # for [CLS], token 0
    """
    ranks = trace.rank(cls, "resid")[:, token]
    hits = np.flatnonzero(ranks == 0)
    return int(hits[0]) if len(hits) else None


def check_first_top1_layer(answer: Any, trace: Trace, cls: int, token: int = 0) -> Verdict:
    """Exercise 1: at which layer does ``token`` first rank ``cls`` highest?

    Example:
        >>> check_first_top1_layer(3, trace, cls=trace.prediction.index)
    """
    if _missing(answer):
        return NOT_ANSWERED
    expected = first_top1_layer(trace, cls, token)
    hint = "Move the layer slider from 0 upwards with the [CLS] token hovered; read its top class at each layer."
    return _verdict(answer == expected, f"layer {expected} is the first where it ranks first.", hint)


def check_identifiability_function(fn: Callable[[np.ndarray, int], np.ndarray], seed: int = 0) -> Verdict:
    """Exercise 2: ``fn(logits [N, C], cls) -> [N]`` must compute ``1 - rank / C`` (ties in the class's favour).

    Example:
        >>> check_identifiability_function(lambda logits, c: 1 - (logits > logits[:, [c]]).sum(1) / logits.shape[1])
    """
    if _missing(fn):
        return NOT_ANSWERED
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(40, 10)).astype(np.float32)
    logits[:5, 4] = logits[:5, 7]  # ties with class 7
    logits[5:8] = 0.0  # every class tied
    for cls in (0, 7):
        expected = identifiability_from_rank(rank_of(logits, cls), logits.shape[1])
        try:
            result = fn(logits.copy(), cls)
            if result is None:
                return NOT_ANSWERED
            got = np.asarray(result, dtype=np.float64)
        except Exception as err:  # a student's bug: report it, do not stop the lab
            return Verdict(False, f"✗ Your function raised {type(err).__name__}: {err}")
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-6):
            bad = int(np.argmax(~np.isclose(got, expected))) if got.shape == expected.shape else None
            where = (
                f" (first mismatch: row {bad}, got {got[bad]:.3f}, expected {expected[bad]:.3f})"
                if bad is not None
                else ""
            )
            return _verdict(
                False,
                "",
                f"For class {cls} your function disagrees{where}. Rank = how many classes have a strictly "
                "greater logit; identifiability = 1 - rank / number of classes.",
            )
    return _verdict(True, "your identifiability matches the engine's, ties included.", "")


def object_context_means(lens: Lens, trace: Trace, mask: np.ndarray, cls: int, layer: int) -> tuple[float, float]:
    """Mean identifiability of ``cls`` over object tokens and over context tokens at a residual layer.

    Example:
        >>> data = vl.data.shapes(1, seed=2)
        >>> trace = lens.trace(data.images[0])
        >>> object_context_means(lens, trace, data.masks[0], cls=int(data.labels[0]), layer=6)
    """
    from .analysis import token_groups

    groups = token_groups(lens, mask)
    values = trace.identifiability(cls, "resid")[layer]
    return float(values[groups["object"]].mean()), float(values[groups["context"]].mean())


def check_object_context(answer: Any, lens: Lens, trace: Trace, mask: np.ndarray, cls: int, layer: int) -> Verdict:
    """Exercise 3: ``(object_mean, context_mean)`` identifiability of ``cls`` at ``layer`` (residual stream).

    Example:
        >>> check_object_context((0.9, 0.6), lens, trace, data.masks[0], cls=int(data.labels[0]), layer=6)
    """
    if _missing(answer):
        return NOT_ANSWERED
    expected = object_context_means(lens, trace, mask, cls, layer)
    try:
        ok = len(answer) == 2 and np.allclose([float(a) for a in answer], expected, atol=1e-3)
    except (TypeError, ValueError):
        ok = False
    hint = (
        "Use vl.analysis.token_groups(lens, mask) for the object/context token selections and "
        "trace.identifiability(cls, 'resid')[layer] for the values; answer a (object, context) pair."
    )
    return _verdict(ok, f"object {expected[0]:.3f}, context {expected[1]:.3f}.", hint)


def check_sublayer(answer: Any, trace: Trace, cls: int, block: int, token: int = 0) -> Verdict:
    """Exercise 4: which sublayer of ``block`` raises ``cls``'s logit of ``token`` more, ``"attn"`` or ``"mlp"``?

    Example:
        >>> check_sublayer("mlp", trace, cls=trace.prediction.index, block=6)
    """
    if _missing(answer):
        return NOT_ANSWERED
    attn = float(trace.logits("attn")[block - 1, token, cls])
    mlp = float(trace.logits("mlp")[block - 1, token, cls])
    expected = "attn" if attn > mlp else "mlp"
    hint = "Switch the Site control between attention and MLP at that layer and compare the [CLS] cell (metric: logit)."
    return _verdict(
        str(answer).lower() == expected,
        f"attention adds {attn:+.2f} and the MLP {mlp:+.2f} to the logit.",
        hint,
    )


def self_only_change(lens: Lens, images: Any, blocks: list[int]) -> float:
    """Change of mean image-token identifiability of the prediction at the last layer under self-only attention.

    Example:
        >>> self_only_change(lens, vl.data.shapes(8, seed=2).images, blocks=[4, 5, 6])
    """
    changes = []
    for image in images:
        base = lens.trace(image)
        cls = base.prediction.index
        perturbed = lens.trace(image, attention="self_only", blocks=blocks)
        image_tokens = base.tokens.image_tokens
        before = base.identifiability(cls, "resid")[-1, image_tokens].mean()
        after = perturbed.identifiability(cls, "resid")[-1, image_tokens].mean()
        changes.append(after - before)
    return float(np.mean(changes))


def check_self_only(answer: Any, lens: Lens, images: Any, blocks: list[int]) -> Verdict:
    """Exercise 5: does self-only attention in ``blocks`` make image tokens more (``"up"``) or less (``"down"``) identifiable?

    Example:
        >>> check_self_only("down", lens, vl.data.shapes(8, seed=2).images, blocks=[4, 5, 6])
    """
    if _missing(answer):
        return NOT_ANSWERED
    change = self_only_change(lens, images, blocks)
    expected = "up" if change > 0 else "down"
    hint = "Open the explorer's 'What if…' panel, choose 'self only' for those blocks and watch the image tokens."
    return _verdict(
        str(answer).lower() == expected, f"mean image-token identifiability changes by {change:+.3f}.", hint
    )


def check_pointing(answer: Any, lens: Lens, relevance_map: np.ndarray, mask: np.ndarray) -> Verdict:
    """Exercise 6: is the most relevant patch of ``relevance_map`` on the object (``True``/``False``)?

    Example:
        >>> relevance_map = vl.explain.relevance(lens, data.images[0]).map  # [h, w]
        >>> check_pointing(True, lens, relevance_map, data.masks[0])
    """
    if _missing(answer):
        return NOT_ANSWERED
    from .analysis import token_groups

    on_object = token_groups(lens, mask)["object"][lens.tokens.n_prefix :].reshape(relevance_map.shape)
    row, col = np.unravel_index(int(np.argmax(relevance_map)), relevance_map.shape)
    expected = bool(on_object[row, col])
    hint = "np.unravel_index(map.argmax(), map.shape) gives the top patch; compare it with the object mask."
    where = "on" if expected else "off"
    return _verdict(bool(answer) == expected, f"the top patch ({row}, {col}) is {where} the object.", hint)


__all__ = [
    "Verdict",
    "check_first_top1_layer",
    "check_identifiability_function",
    "check_object_context",
    "check_pointing",
    "check_self_only",
    "check_sublayer",
    "first_top1_layer",
    "object_context_means",
    "self_only_change",
]
