"""Perturbations of the forward pass: restricted attention and removed tokens.

* ``attention="self_only"``: in the chosen blocks every image (patch) token attends
  only to itself; [CLS] and other prefix tokens keep their full attention.
* ``attention="no_cls"``: in the chosen blocks image tokens give [CLS] zero
  attention weight. By default the weight is zeroed *without renormalising* the
  row (as the paper does: the row then sums to less than one);
  ``renormalize=True`` instead removes [CLS] before the softmax, so the row sums
  to one over the remaining tokens.
* ``drop_tokens=[...]``: those image tokens are removed from the sequence after
  embedding (the remaining tokens keep their position embeddings). Their hidden
  states and projections are NaN in the trace, their rank -1.

Restrictions are applied as attention masks through each block's own attention
module (fused kernels stay in use); only ``no_cls`` without renormalising needs
an explicit attention computation, which is done from the module's own weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .trace import TokenLayout, check_ints

ATTENTION_MODES = ("self_only", "no_cls")


@dataclass(frozen=True)
class Perturbation:
    """A validated perturbation; the default (all ``None``/empty) is the unperturbed model."""

    attention: str | None = None
    blocks: tuple[int, ...] = ()  # 1-based block numbers where ``attention`` applies
    renormalize: bool = False
    drop_tokens: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        return self.attention is not None or bool(self.drop_tokens)

    def applies_to(self, block_number: int) -> bool:
        return self.attention is not None and block_number in self.blocks

    def as_dict(self) -> dict:
        if not self.active:
            return {}
        out: dict = {}
        if self.attention:
            out.update(attention=self.attention, blocks=list(self.blocks), renormalize=self.renormalize)
        if self.drop_tokens:
            out["drop_tokens"] = list(self.drop_tokens)
        return out


def make_perturbation(
    layout: TokenLayout,
    depth: int,
    attention: str | None = None,
    blocks: Iterable[int] | None = None,
    renormalize: bool = False,
    drop_tokens: Iterable[int] | None = None,
) -> Perturbation:
    """Check the user's options against the model and return a :class:`Perturbation`."""
    if attention is not None and attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention perturbation {attention!r}: choose 'self_only' or 'no_cls'")
    if attention == "no_cls" and "cls" not in layout.prefix:
        raise ValueError("attention='no_cls' needs a model with a class token")
    if attention is None and (blocks is not None or renormalize):
        raise ValueError("blocks= and renormalize= only apply together with attention='self_only' or 'no_cls'")
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize must be True or False, got {renormalize!r}")
    blocks = None if blocks is None else check_ints(blocks, "blocks")
    chosen = tuple(range(1, depth + 1)) if blocks is None else tuple(sorted(set(blocks)))
    bad = [b for b in chosen if not 1 <= b <= depth]
    if bad or (blocks is not None and not chosen):
        raise ValueError(f"blocks must be block numbers 1..{depth}, got {list(blocks or [])}")
    tokens = [] if drop_tokens is None else check_ints(drop_tokens, "drop_tokens")
    dropped = tuple(sorted({layout.check_token(t) for t in tokens}))
    prefix = [t for t in dropped if t < layout.n_prefix]
    if prefix:
        raise ValueError(f"drop_tokens may only name image (patch) tokens; {prefix} are prefix tokens")
    if len(dropped) >= layout.n_patches:
        raise ValueError("drop_tokens would remove every image token")
    return Perturbation(attention, chosen if attention else (), bool(renormalize), dropped)


def attention_mask(p: Perturbation, layout: TokenLayout, block_number: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive mask ``[T, T]`` (0 = may attend, -inf = may not) for one block, or None when unrestricted."""
    T, n = layout.n_tokens, layout.n_prefix
    allowed = torch.ones(T, T, dtype=torch.bool)
    if p.applies_to(block_number) and p.attention == "self_only":
        allowed[n:, :] = False
        allowed[n:, n:] |= torch.eye(T - n, dtype=torch.bool)
    if p.applies_to(block_number) and p.attention == "no_cls" and p.renormalize:
        allowed[n:, layout.prefix.index("cls")] = False
    if p.drop_tokens:
        allowed[:, list(p.drop_tokens)] = False
        allowed[list(p.drop_tokens), list(p.drop_tokens)] = True  # dropped rows stay finite; they are NaN-ed later
    if bool(allowed.all()):
        return None
    mask = torch.zeros(T, T, dtype=dtype)
    return mask.masked_fill_(~allowed, float("-inf"))


def zero_cls_weights(layout: TokenLayout):
    """A hook on attention weights ``[B, H, T, T]``: image-token rows give [CLS] zero weight, not renormalised."""
    cls, n = layout.prefix.index("cls"), layout.n_prefix

    def hook(weights: torch.Tensor) -> torch.Tensor:
        weights = weights.clone()
        weights[:, :, n:, cls] = 0.0
        return weights

    return hook
