"""Model adapters: one small interface over each supported timm ViT family.

The engine never touches a family's quirks directly. An adapter knows, for its
family, how to embed an image into the token sequence (``embed``), how to run
each block as two residual updates (``attn_update``, ``mlp_update``), and how the
model reads a token out as class logits (``readout``). Everything is read off the
model's public structure (``patch_embed``, ``blocks[i].attn``, ``norm``,
``head``, ...), so the numbers are the model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

WeightsHook = Callable[[torch.Tensor], torch.Tensor]  # attention weights [B, H, T, T] -> edited weights

SUPPORTED = (
    "timm VisionTransformer (vit_*, deit_*, deit3_*, vit_*_reg*, class token or global_pool='avg'), "
    "VisionTransformerDistilled (deit_*_distilled_*) and Eva (eva02_*) with pre-norm blocks "
    "and a linear classifier head"
)


READABLE_POOLS = ("token", "avg")  # the head reads the class token, or the mean of the patch tokens (linear)
UNREADABLE_POOLS = {
    "": "no pooling at all (the head classifies every token; there is no single prediction)",
    "max": "max pooling takes each feature's maximum over tokens (a different token per feature)",
    "avgmax": "avg+max pooling mixes the mean with each feature's maximum over tokens",
}


@dataclass(frozen=True)
class Embedded:
    """The token sequence entering block 1, plus anything the blocks need (e.g. rotary embeddings)."""

    tokens: torch.Tensor  # [B, T, D]
    context: Any = None


class ModelAdapter:
    """Base adapter for timm ViTs whose blocks are ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Every lens holds the adapter of its model (``lens.adapter``); see :func:`adapter_for`.

    Example:
        >>> lens.adapter.family, lens.adapter.depth, lens.adapter.prefix_names
        ('vit', 6, ('cls',))
    """

    family = "vit"

    def __init__(self, model: nn.Module):
        self.model = model
        self.blocks: list[nn.Module] = list(model.blocks)
        check_blocks(self.blocks, self.block_types())

    # --- structure -----------------------------------------------------------
    @staticmethod
    def block_types() -> tuple[type, ...]:
        from timm.models.vision_transformer import Block

        return (Block,)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def prefix_names(self) -> tuple[str, ...]:
        names = []
        if getattr(self.model, "cls_token", None) is not None:
            names.append("cls")
        names += [f"reg{i}" for i in range(_num_registers(self.model))]
        return tuple(names)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.patch_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """The image size the model was built for (H, W)."""
        return tuple(self.model.patch_embed.img_size)

    def grid_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        ph, pw = self.patch_size
        return image_hw[0] // ph, image_hw[1] // pw

    # --- the forward pass, in named steps --------------------------------------
    def embed(self, images: torch.Tensor) -> Embedded:
        m = self.model
        x = m.patch_embed(images)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return Embedded(m.norm_pre(x))

    def attn_update(
        self,
        index: int,
        x: torch.Tensor,
        context: Any,
        mask: torch.Tensor | None = None,
        weights_hook: WeightsHook | None = None,
    ) -> torch.Tensor:
        """What block ``index``'s attention adds to ``x``; ``mask`` is additive, ``weights_hook`` edits softmax weights."""
        block = self.blocks[index]
        normed = block.norm1(x)
        if weights_hook is None:
            out = block.attn(normed, attn_mask=mask)
        else:
            out = explicit_attention(block.attn, normed, mask, weights_hook)
        return block.drop_path1(block.ls1(out))

    def mlp_update(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[index]
        return block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    # --- attention in pieces (relevance maps differentiate through these) ----------------
    def attention_qkv(
        self, index: int, x: torch.Tensor, context: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ``[B, H, T, d]`` of block ``index`` for the stream ``x`` entering it (before ``norm1``)."""
        attn = self.blocks[index].attn
        if getattr(attn, "gate", None) is not None or not isinstance(getattr(attn, "qkv", None), nn.Linear):
            raise ValueError(f"block {index + 1}'s attention cannot be split into q, k, v here")
        return split_qkv(attn, self.blocks[index].norm1(x))

    def attention_scale(self, index: int) -> float:
        return float(self.blocks[index].attn.scale)

    def update_from_heads(self, index: int, mixed: torch.Tensor) -> torch.Tensor:
        """The residual update of block ``index``'s attention from its heads' outputs ``[B, T, H*d]``."""
        block = self.blocks[index]
        return block.drop_path1(block.ls1(block.attn.proj(block.attn.norm(mixed))))

    def memory_keys(
        self,
        index: int,
        kind: str,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        weights_hook: WeightsHook | None = None,
    ) -> torch.Tensor:
        """Key coefficients of block ``index``'s memories for the tokens of ``x``.

        ``kind="mlp"``: the ``fc1`` outputs (before the activation) for the stream
        the MLP reads (``x`` = resid + attention update). ``kind="attn"``: what
        enters the output projection, for the stream entering the block (``x``).
        """
        block = self.blocks[index]
        if kind == "mlp":
            fc1 = getattr(block.mlp, "fc1", None)
            if not isinstance(fc1, nn.Linear):
                raise ValueError("MLP memories need timm Mlp blocks with a linear fc1 layer")
            return fc1(block.norm2(x))
        return explicit_attention(block.attn, block.norm1(x), mask, weights_hook, proj_input=True)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """Class logits of every token: the model's final norm (or ``fc_norm``) and head."""
        m = self.model
        return m.head(m.fc_norm(m.norm(hidden)))

    def model_logits(self, final_tokens: torch.Tensor) -> torch.Tensor:
        """The model's own output from the last block's tokens (its pooling and head)."""
        return self.model.forward_head(self.model.norm(final_tokens))


class DistilledAdapter(ModelAdapter):
    """DeiT with a distillation token: the readout averages ``head`` and ``head_dist`` as timm does at inference."""

    family = "deit_distilled"

    @property
    def prefix_names(self) -> tuple[str, ...]:
        return ("cls", "dist")

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        m = self.model
        normed = m.fc_norm(m.norm(hidden)) if hasattr(m, "fc_norm") else m.norm(hidden)
        return (m.head(normed) + m.head_dist(normed)) / 2


class EvaAdapter(ModelAdapter):
    """EVA / EVA-02 (rotary position embeddings, optional LayerScale ``gamma_1``/``gamma_2``)."""

    family = "eva"

    @staticmethod
    def block_types() -> tuple[type, ...]:
        from timm.models.eva import EvaBlock

        return (EvaBlock,)

    def embed(self, images: torch.Tensor) -> Embedded:
        m = self.model
        x = m.patch_embed(images)
        x, rope = m._pos_embed(x)
        return Embedded(m.norm_pre(x), rope)

    def _rope(self, index: int, rope: Any) -> Any:
        if rope is not None and getattr(self.model, "rope_mixed", False):
            return rope[index]
        return rope

    def attn_update(
        self,
        index: int,
        x: torch.Tensor,
        context: Any,
        mask: torch.Tensor | None = None,
        weights_hook: WeightsHook | None = None,
    ) -> torch.Tensor:
        if weights_hook is not None:
            raise ValueError(
                "editing attention weights after the softmax (attention='no_cls' without renormalize) is not "
                "supported for EVA blocks; use renormalize=True"
            )
        block = self.blocks[index]
        out = block.attn(block.norm1(x), rope=self._rope(index, context), attn_mask=mask)
        if block.gamma_1 is not None:
            out = block.gamma_1 * out
        return block.drop_path1(out)

    def attention_qkv(
        self, index: int, x: torch.Tensor, context: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from timm.layers import apply_rot_embed_cat

        attn = self.blocks[index].attn
        normed = self.blocks[index].norm1(x)
        batch, tokens, _ = normed.shape
        if attn.qkv is not None:
            bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            qkv = torch.nn.functional.linear(normed, attn.qkv.weight, bias)
            q, k, v = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (
                proj(normed).reshape(batch, tokens, attn.num_heads, -1).transpose(1, 2)
                for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
        q, k = attn.q_norm(q), attn.k_norm(k)
        rope = self._rope(index, context)
        if rope is not None:
            n, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
            q = torch.cat([q[:, :, :n], apply_rot_embed_cat(q[:, :, n:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :n], apply_rot_embed_cat(k[:, :, n:], rope, half=half)], dim=2).type_as(v)
        return q, k, v

    def update_from_heads(self, index: int, mixed: torch.Tensor) -> torch.Tensor:
        block = self.blocks[index]
        out = block.attn.proj(block.attn.norm(mixed))
        if block.gamma_1 is not None:
            out = block.gamma_1 * out
        return block.drop_path1(out)

    def memory_keys(self, index: int, kind: str, x: torch.Tensor, mask=None, weights_hook=None) -> torch.Tensor:
        if kind == "attn":
            raise ValueError("attention memories are not supported for EVA blocks (rotary attention)")
        return super().memory_keys(index, kind, x)

    def mlp_update(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.blocks[index]
        out = block.mlp(block.norm2(x))
        if block.gamma_2 is not None:
            out = block.gamma_2 * out
        return block.drop_path2(out)


def split_qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, H, T, d]`` of a timm ``Attention`` for already normed tokens ``x [B, T, D]``."""
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def explicit_attention(
    attn: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    weights_hook: WeightsHook | None,
    proj_input: bool = False,
) -> torch.Tensor:
    """timm ``Attention`` written out step by step, so its softmax weights can be edited by ``weights_hook``.

    With ``proj_input=True`` it returns what enters the output projection (the
    attention memories' key coefficients) instead of the module's output.
    """
    batch, tokens, _ = x.shape
    q, k, v = split_qkv(attn, x)
    scores = (q * attn.scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    if weights_hook is not None:
        weights = weights_hook(weights)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, -1)
    out = attn.norm(out)
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(x).sigmoid()
    return out if proj_input else attn.proj(out)


def check_blocks(blocks: list[nn.Module], allowed: tuple[type, ...]) -> None:
    for i, block in enumerate(blocks):
        if type(block) not in allowed:
            raise ValueError(
                f"block {i} is a {type(block).__name__}, which the lens cannot split into attention and MLP "
                f"updates (expected {', '.join(t.__name__ for t in allowed)}). Supported: {SUPPORTED}."
            )


def _num_registers(model: nn.Module) -> int:
    reg = getattr(model, "reg_token", None)
    return 0 if reg is None else int(reg.shape[1])


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Pick the adapter for ``model``, or raise ``ValueError`` saying why it is not supported.

    Example:
        >>> adapter_for(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)).family
        'deit_distilled'
    """
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformerDistilled):
        adapter: ModelAdapter = DistilledAdapter(model)
    elif isinstance(model, VisionTransformer):
        adapter = ModelAdapter(model)
    elif isinstance(model, Eva):
        adapter = EvaAdapter(model)
    else:
        raise ValueError(
            f"{type(model).__name__} is not a supported vision transformer: the lens reads class-token/patch-token "
            f"transformers block by block. Supported: {SUPPORTED}."
        )
    _check_head(model, adapter)
    expected = getattr(model, "num_prefix_tokens", len(adapter.prefix_names))
    if expected != len(adapter.prefix_names):
        raise ValueError(
            f"cannot lay out this model's tokens: it has {expected} prefix tokens but the lens found "
            f"{adapter.prefix_names}. Supported: {SUPPORTED}."
        )
    return adapter


def _check_head(model: nn.Module, adapter: ModelAdapter) -> None:
    if getattr(model, "attn_pool", None) is not None or getattr(model, "global_pool", None) == "map":
        raise ValueError(
            "this model pools tokens with an attention-pool head (global_pool='map'): its classifier does not "
            "read single tokens, so tokens cannot be projected into class space. Use a model with a class token "
            "or average pooling."
        )
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or getattr(model, "num_classes", 0) == 0:
        raise ValueError(
            "this model has no linear classifier head (num_classes=0 or a custom head): there is no class "
            "embedding space to project into. Create it with num_classes > 0, e.g. "
            "timm.create_model(name, num_classes=1000)."
        )
    pool = getattr(model, "global_pool", "token")
    if pool not in READABLE_POOLS:
        raise ValueError(
            f"this model pools tokens with global_pool={pool!r}: {UNREADABLE_POOLS.get(pool, 'an unknown pooling')}, "
            "so its head reads neither one token nor the tokens' mean and the lens cannot project tokens the way "
            "the model reads them. Create it with global_pool='token' (class token) or 'avg'."
        )
    if not adapter.prefix_names and pool != "avg":
        raise ValueError(
            f"this model has no class token and pools with global_pool={pool!r}; "
            "supported without a class token: global_pool='avg'."
        )
