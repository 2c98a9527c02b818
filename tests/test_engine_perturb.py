"""Perturbations of the trace, checked against hand-written attention on small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, random_image

import vitlens_widgets as vl
from vitlens_widgets.engine.adapters import explicit_attention


@pytest.fixture(scope="module")
def setup():
    model = make_model("vit", depth=3)
    lens = vl.Lens(model)
    image = random_image(np.random.default_rng(1))
    return model, lens, image


def qkv_of(attn, x):
    """q, k, v of a timm Attention for normed tokens x [T, D] -> [H, T, d] each."""
    T = x.shape[0]
    qkv = attn.qkv(x).reshape(T, 3, attn.num_heads, attn.head_dim).permute(1, 2, 0, 3)
    return qkv[0], qkv[1], qkv[2]


def block_input(trace, block_number):
    return torch.from_numpy(trace.hidden_states("resid")[block_number - 1])


def test_explicit_attention_equals_the_module(setup):
    model, lens, image = setup
    x = model.blocks[0].norm1(block_input(lens.trace(image), 1))[None]
    with torch.no_grad():
        torch.testing.assert_close(
            explicit_attention(model.blocks[0].attn, x, None, lambda w: w), model.blocks[0].attn(x)
        )


def test_self_only_image_tokens_attend_only_to_themselves(setup):
    model, lens, image = setup
    base = lens.trace(image)
    trace = lens.trace(image, attention="self_only", blocks=[2])
    np.testing.assert_array_equal(trace.hidden_states("resid")[:2], base.hidden_states("resid")[:2])
    block = model.blocks[1]
    with torch.no_grad():
        x = block.norm1(block_input(trace, 2))
        _, _, v = qkv_of(block.attn, x)
        own_value = v.permute(1, 0, 2).reshape(x.shape[0], -1)  # weight 1 on itself: output = v_i
        expected = block.attn.proj(own_value).numpy()
        full = block.attn(x[None])[0].numpy()
    update = trace.hidden_states("attn")[1]
    np.testing.assert_allclose(update[1:], expected[1:], atol=1e-5)  # image tokens
    np.testing.assert_allclose(update[0], full[0], atol=1e-5)  # [CLS] keeps full attention
    assert trace.options == {"attention": "self_only", "blocks": [2], "renormalize": False}


@pytest.mark.parametrize("renormalize", [False, True])
def test_no_cls_zeroes_image_tokens_attention_to_cls(setup, renormalize):
    model, lens, image = setup
    trace = lens.trace(image, attention="no_cls", blocks=[3], renormalize=renormalize)
    block = model.blocks[2]
    with torch.no_grad():
        x = block.norm1(block_input(trace, 3))
        q, k, v = qkv_of(block.attn, x)
        scores = (q * block.attn.scale) @ k.transpose(-2, -1)
        weights = scores.softmax(-1)
        weights[:, 1:, 0] = 0.0
        if renormalize:
            weights[:, 1:] /= weights[:, 1:].sum(-1, keepdim=True)
        out = (weights @ v).permute(1, 0, 2).reshape(x.shape[0], -1)
        expected = block.attn.proj(out).numpy()
    np.testing.assert_allclose(trace.hidden_states("attn")[2], expected, atol=1e-5)


def test_dropped_tokens_are_removed_from_the_sequence(setup):
    model, lens, image = setup
    drop = [1, 6, 16]
    trace = lens.trace(image, drop_tokens=drop)
    kept = [t for t in range(lens.tokens.n_tokens) if t not in drop]
    x = torch.from_numpy(lens.trace(image).hidden_states("resid")[0])[kept][None]  # embeddings, positions kept
    with torch.no_grad():
        for block in model.blocks:
            x = block(x)
        expected_logits = model.forward_head(model.norm(x))[0].numpy()
    resid = trace.hidden_states("resid")
    np.testing.assert_allclose(resid[-1][kept], x[0].numpy(), atol=1e-5)
    assert np.isnan(resid[:, drop]).all() and not np.isnan(resid[:, kept]).any()
    np.testing.assert_allclose(trace.output_logits, expected_logits, atol=1e-5)
    assert (trace.rank(0, "mlp")[:, drop] == -1).all()
    assert np.isnan(trace.identifiability(0, "attn")[:, drop]).all()


def test_perturbed_traces_are_cached_separately(setup):
    _, lens, image = setup
    base = lens.trace(image)
    perturbed = lens.trace(image, attention="self_only")
    assert perturbed is not base and lens.trace(image, attention="self_only") is perturbed
    assert not np.allclose(perturbed.logits("resid")[-1], base.logits("resid")[-1])


def test_batches_take_the_same_perturbations(setup):
    _, lens, image = setup
    batch = lens.trace_batch([image, image], attention="no_cls", renormalize=True, drop_tokens=[5])
    single = lens.trace(image, attention="no_cls", renormalize=True, drop_tokens=[5])
    np.testing.assert_allclose(batch[1].logits("resid"), single.logits("resid"), atol=1e-4)
    assert (batch.rank([0, 1], "resid")[:, :, 5] == -1).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attention": "none"}, "unknown attention perturbation"),
        ({"attention": "self_only", "blocks": [0]}, "block numbers 1..3"),
        ({"attention": "self_only", "blocks": [4]}, "block numbers 1..3"),
        ({"blocks": [1]}, "only apply together with attention"),
        ({"drop_tokens": [0]}, "prefix tokens"),
        ({"drop_tokens": [17]}, "out of range"),
        ({"drop_tokens": list(range(1, 17))}, "every image token"),
    ],
)
def test_bad_perturbations_fail_clearly(setup, options, message):
    _, lens, image = setup
    with pytest.raises(ValueError, match=message):
        lens.trace(image, **options)


def test_no_cls_needs_a_class_token():
    lens = vl.Lens(make_model("avg_pool"))
    with pytest.raises(ValueError, match="needs a model with a class token"):
        lens.trace(random_image(np.random.default_rng(0)), attention="no_cls")


def test_eva_supports_masks_but_not_post_softmax_edits():
    lens = vl.Lens(make_model("eva"))
    image = random_image(np.random.default_rng(0))
    assert lens.trace(image, attention="self_only").logits("resid").shape[0] == 3
    assert lens.trace(image, attention="no_cls", renormalize=True).prediction.index >= 0
    with pytest.raises(ValueError, match="renormalize=True"):
        lens.trace(image, attention="no_cls")
