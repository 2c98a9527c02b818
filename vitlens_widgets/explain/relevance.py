"""Which image parts matter for a class: relevance maps over the patch grid.

* ``class_space`` (the paper's method): in each block, project the [CLS] token's
  attention update into class space, take the cross-entropy for the class of
  interest, and differentiate it with respect to the attention weights [CLS]
  gives each image token; negate and sum over heads (one map per block); sum
  over blocks (the global map). Each block's loss depends on its [CLS] row only
  through that block's update, so no backward pass through the model is needed:
  per block, one tiny backward from the class logits to the [CLS] row.
  As in the authors' code (github.com/martinagvilas/vit-cls_emb,
  ``src/gradients.py`` and ``src/perturbation/explain_perturbation.py``): the
  gradient alone (not multiplied by the attention), no clamping, no per-block
  normalisation, every block. Their code applies a softmax before the
  cross-entropy, i.e. twice; we use the plain cross-entropy of the projected
  logits (both are measured in docs/relevance.md).
* ``rollout`` (Abnar & Zuidema, 2020): head-averaged attention with the
  residual added (``0.5 A + 0.5 I``, rows renormalised), multiplied through the
  blocks; the map is the [CLS] row.
* ``grad_rollout`` (Chefer et al., 2021): ``R <- R + mean_h[(dy_c/dA) * A]^+ R``
  from the identity, with ``y_c`` the model's own logit for the class; the map
  is the [CLS] row.
* ``random``: uniform noise, the floor every method must beat.

Higher values mean more relevant. Supported: every family the lens supports
that has a class token (ViT, DeiT, distilled DeiT, DeiT-3, registers, EVA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.classes import ClassLike
from ..engine.lens import Lens
from ..engine.preprocess import ImageLike
from ..engine.trace import Trace

Readout = Callable[[torch.Tensor], torch.Tensor]

METHODS = ("class_space", "rollout", "grad_rollout", "random")
SIGNED_METHODS = frozenset({"class_space"})  # maps with negative values too: drawn on a diverging scale


@dataclass(frozen=True)
class Relevance:
    """A relevance map over the patch grid (higher = more relevant).

    Example:
        >>> r = vl.explain.relevance(vl.Lens.demo(), image)
        >>> r.class_name, r.map.argmax()   # the class explained, the most relevant patch (flat index)
    """

    map: np.ndarray  # float32 [h, w]
    per_block: np.ndarray | None  # float32 [L, h, w] where the method has one
    method: str
    cls: int
    class_name: str


def relevance(
    lens: Lens, image: ImageLike, cls: ClassLike | None = None, method: str = "class_space", seed: int = 0
) -> Relevance:
    """Relevance of each image patch for ``cls`` (default: the model's prediction).

    Example:
        >>> r = vl.explain.relevance(vl.Lens.demo(), image, method="class_space")
        >>> r.map.shape, r.per_block.shape   # (8, 8), (6, 8, 8)
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    trace = lens.trace(image)
    target = trace.prediction.index if cls is None else lens.class_index(cls)
    grid = lens.tokens.grid
    if method == "random":
        values = np.random.default_rng(seed).random(grid).astype(np.float32)
        return Relevance(values, None, method, target, lens.class_names[target])
    _check_supported(lens)
    if method == "class_space":
        per_block = class_space_per_block(lens, trace, target)
        return Relevance(per_block.sum(0), per_block, method, target, lens.class_names[target])
    image_tensor = lens.prepare(image).tensor[None].to(lens.device)
    matrices = (
        rollout_matrix(lens, image_tensor) if method == "rollout" else grad_rollout_matrix(lens, image_tensor, target)
    )
    row = matrices[lens.tokens.prefix.index("cls")]
    values = row[lens.tokens.n_prefix :].reshape(grid).astype(np.float32)
    return Relevance(values, None, method, target, lens.class_names[target])


def _check_supported(lens: Lens) -> None:
    if "cls" not in lens.tokens.prefix:
        raise ValueError("these relevance maps read the [CLS] token's attention: the model needs a class token")


def _weights(lens: Lens, index: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return ((q * lens.adapter.attention_scale(index)) @ k.transpose(-2, -1)).softmax(dim=-1)


def class_space_per_block(lens: Lens, trace: Trace, cls: int) -> np.ndarray:
    """float32 ``[L, h, w]``: minus the cross-entropy gradient w.r.t. [CLS]'s attention to each patch, per block.

    Example:
        >>> lens = vl.Lens.demo()
        >>> per_block = vl.explain.class_space_per_block(lens, lens.trace(image), cls=3)
        >>> per_block.shape   # (6, 8, 8); per_block.sum(0) is the global map
    """
    gradients, _ = class_space_gradients(lens, trace, cls)
    return -gradients.sum(1).reshape(-1, *lens.tokens.grid)


def class_space_gradients(
    lens: Lens, trace: Trace, cls: int, softmax_first: bool = False, readout: Readout | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per block and head, the cross-entropy gradient w.r.t. [CLS]'s attention to each patch, and those weights.

    Both float32 ``[L, H, n_patches]``. ``softmax_first`` applies a softmax to the
    class logits before the cross-entropy (as the authors' code does);
    ``readout`` replaces the model's readout (final norm and head) of each
    block's update (for diagnostics).
    """
    layout, adapter = lens.tokens, lens.adapter
    cls_token = layout.prefix.index("cls")
    target = torch.tensor([cls], device=lens.device)
    project = adapter.readout if readout is None else readout
    context = (
        adapter.embed(lens.prepare(trace.image).tensor[None].to(lens.device)).context
        if lens.adapter.family == "eva"
        else None
    )
    gradients, attention = [], []
    with torch.enable_grad():
        for index in range(adapter.depth):
            x = trace.hidden["resid"][index].clone().to(lens.device)[None]  # [1, T, D]
            q, k, v = adapter.attention_qkv(index, x, context)
            weights = _weights(lens, index, q[:, :, cls_token : cls_token + 1], k).detach().requires_grad_()
            mixed = (weights @ v.detach()).transpose(1, 2).reshape(1, 1, -1)  # [1, 1, H*d]
            logits = project(adapter.update_from_heads(index, mixed)[:, 0])
            loss = F.cross_entropy(logits.softmax(-1) if softmax_first else logits, target)
            (grad,) = torch.autograd.grad(loss, weights)
            gradients.append(grad[0, :, 0, layout.n_prefix :])
            attention.append(weights.detach()[0, :, 0, layout.n_prefix :])
    return _stacked(gradients), _stacked(attention)


def _stacked(tensors: list[torch.Tensor]) -> np.ndarray:
    return torch.stack(tensors).float().cpu().numpy()


def rollout_matrix(lens: Lens, image: torch.Tensor) -> np.ndarray:
    """Attention rollout ``[T, T]`` (head mean, plus identity, rows renormalised, multiplied through blocks)."""
    adapter = lens.adapter
    with torch.inference_mode():
        embedded = adapter.embed(image)
        h = embedded.tokens
        tokens = h.shape[1]
        eye = torch.eye(tokens, device=h.device)
        result = eye.clone()
        for i in range(adapter.depth):
            q, k, _ = adapter.attention_qkv(i, h, embedded.context)
            mixed = 0.5 * _weights(lens, i, q, k)[0].mean(0) + 0.5 * eye
            result = (mixed / mixed.sum(-1, keepdim=True)) @ result
            h = h + adapter.attn_update(i, h, embedded.context)
            h = h + adapter.mlp_update(i, h)
    return result.float().cpu().numpy()


def grad_rollout_matrix(lens: Lens, image: torch.Tensor, cls: int) -> np.ndarray:
    """Gradient-weighted rollout ``[T, T]`` for the model's logit of ``cls`` (Chefer et al. style)."""
    adapter = lens.adapter
    weights_per_block: list[torch.Tensor] = []
    with torch.enable_grad():
        embedded = adapter.embed(image)
        h = embedded.tokens
        for i in range(adapter.depth):
            q, k, v = adapter.attention_qkv(i, h, embedded.context)
            weights = _weights(lens, i, q, k)
            weights.retain_grad()
            weights_per_block.append(weights)
            mixed = (weights @ v).transpose(1, 2).reshape(h.shape[0], h.shape[1], -1)
            h = h + adapter.update_from_heads(i, mixed)
            h = h + adapter.mlp_update(i, h)
        logit = adapter.model_logits(h)[0, cls]
        logit.backward()
    tokens = h.shape[1]
    result = torch.eye(tokens)
    for weights in weights_per_block:
        cam = (weights.grad * weights).detach()[0].clamp(min=0).mean(0).float().cpu()
        result = result + cam @ result
    lens.model.zero_grad(set_to_none=True)
    return result.numpy()
