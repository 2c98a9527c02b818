"""Relevance maps, checked against independent autograd computations on small models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model, random_image

import vitlens_widgets as vl


@pytest.fixture(scope="module")
def setup():
    model = make_model("layerscale", depth=3)
    lens = vl.Lens(model)
    image = random_image(np.random.default_rng(2))
    return model, lens, image


def full_attention_gradient(model, lens, image, cls, softmax_first=False):
    """Independent: the whole attention matrix as a leaf, every token's update, [CLS]'s row of the gradient."""
    trace = lens.trace(image)
    maps = []
    for b, block in enumerate(model.blocks):
        x = block.norm1(torch.from_numpy(trace.hidden_states("resid")[b]))[None]
        T = x.shape[1]
        qkv = block.attn.qkv(x).reshape(1, T, 3, block.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ((q * block.attn.scale) @ k.transpose(-2, -1)).softmax(-1).detach().requires_grad_()
        update = block.ls1(block.attn.proj((weights @ v.detach()).transpose(1, 2).reshape(1, T, -1)))
        np.testing.assert_allclose(update[0, 0].detach().numpy(), trace.hidden_states("attn")[b][0], atol=1e-5)
        logits = model.head(model.norm(update[0, :1]))
        F.cross_entropy(logits.softmax(-1) if softmax_first else logits, torch.tensor([cls])).backward()
        maps.append(-weights.grad[0, :, 0, 1:].sum(0).reshape(lens.tokens.grid).numpy())
    return np.stack(maps)


def test_class_space_map_equals_an_independent_autograd_computation(setup):
    model, lens, image = setup
    result = vl.explain.relevance(lens, image, cls=7)
    expected = full_attention_gradient(model, lens, image, 7)
    np.testing.assert_allclose(result.per_block, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.map, expected.sum(0), rtol=1e-4, atol=1e-6)
    assert result.map.shape == lens.tokens.grid and result.map.dtype == np.float32
    assert result.cls == 7 and result.method == "class_space"


def test_class_space_gradients_per_head_with_the_authors_softmax_and_attention(setup):
    from vitlens_widgets.explain.relevance import class_space_gradients

    model, lens, image = setup
    trace = lens.trace(image)
    grad, attention = class_space_gradients(lens, trace, 7)
    depth, heads = len(model.blocks), model.blocks[0].attn.num_heads
    assert grad.shape == attention.shape == (depth, heads, lens.tokens.n_patches)
    np.testing.assert_allclose(
        -grad.sum(1).reshape(-1, *lens.tokens.grid), vl.explain.relevance(lens, image, cls=7).per_block
    )
    assert (attention >= 0).all() and (attention.sum(-1) <= 1 + 1e-6).all()  # [CLS]'s row without the prefix
    softmax_grad, _ = class_space_gradients(lens, trace, 7, softmax_first=True)
    expected = full_attention_gradient(model, lens, image, 7, softmax_first=True)
    np.testing.assert_allclose(-softmax_grad.sum(1).reshape(expected.shape), expected, rtol=1e-4, atol=1e-7)


def test_default_class_is_the_prediction_and_names_resolve(setup):
    _, lens, image = setup
    assert vl.explain.relevance(lens, image).cls == lens.trace(image).prediction.index
    assert vl.explain.relevance(lens, image, cls="tench").cls == 0


def test_rollout_matches_a_direct_product_of_attention_matrices(setup):
    model, lens, image = setup
    x = lens.prepare(image).tensor[None]
    captured = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    with torch.no_grad():
        model(x)
    T = captured[0].shape[-1]
    result = np.eye(T)
    for weights in captured:
        mixed = 0.5 * weights[0].mean(0).numpy() + 0.5 * np.eye(T)
        result = (mixed / mixed.sum(-1, keepdims=True)) @ result
    rollout = vl.explain.relevance(lens, image, method="rollout")
    np.testing.assert_allclose(rollout.map, result[0, 1:].reshape(lens.tokens.grid), rtol=1e-4, atol=1e-6)
    for block in model.blocks:
        block.attn.fused_attn = True
        block.attn.attn_drop._forward_hooks.clear()


def test_grad_rollout_and_random_maps(setup):
    _, lens, image = setup
    grad = vl.explain.relevance(lens, image, cls=3, method="grad_rollout")
    assert grad.map.shape == lens.tokens.grid and np.isfinite(grad.map).all() and (grad.map >= 0).all()
    assert grad.per_block is None
    again = vl.explain.relevance(lens, image, cls=3, method="grad_rollout")
    np.testing.assert_array_equal(grad.map, again.map)
    r1 = vl.explain.relevance(lens, image, method="random", seed=1)
    np.testing.assert_array_equal(r1.map, vl.explain.relevance(lens, image, method="random", seed=1).map)
    assert not np.array_equal(r1.map, vl.explain.relevance(lens, image, method="random", seed=2).map)


def test_unsupported_inputs_fail_clearly(setup):
    _, lens, image = setup
    with pytest.raises(ValueError, match="unknown method"):
        vl.explain.relevance(lens, image, method="lime")
    with pytest.raises(ValueError, match="needs a class token"):
        vl.explain.relevance(vl.Lens(make_model("avg_pool")), image)


@pytest.mark.parametrize("family", ["eva", "deit_distilled", "registers", "layerscale"])
def test_attention_pieces_rebuild_the_models_own_attention_update(family):
    """The q/k/v and update pieces the maps differentiate through reproduce each family's attention exactly."""
    lens = vl.Lens(make_model(family))
    image = random_image(np.random.default_rng(0))
    trace = lens.trace(image)
    adapter = lens.adapter
    context = adapter.embed(lens.prepare(image).tensor[None]).context
    with torch.no_grad():
        for i in range(adapter.depth):
            q, k, v = adapter.attention_qkv(i, torch.from_numpy(trace.hidden_states("resid")[i])[None], context)
            weights = ((q * adapter.attention_scale(i)) @ k.transpose(-2, -1)).softmax(-1)
            update = adapter.update_from_heads(i, (weights @ v).transpose(1, 2).reshape(1, q.shape[2], -1))
            np.testing.assert_allclose(update[0].numpy(), trace.hidden_states("attn")[i], atol=1e-5)
    result = vl.explain.relevance(lens, image, cls=1)
    assert result.per_block.shape == (lens.depth, *lens.tokens.grid) and np.isfinite(result.per_block).all()


def test_evaluation_curves_and_mask_agreement_on_a_known_case():
    from vitlens_widgets.explain.evaluate import evaluate_relevance, removal_order

    values = np.array([[0.3, 0.1], [0.9, 0.5]])
    assert removal_order(values, 1, most_relevant_first=False).tolist() == [2, 1, 4, 3]
    assert removal_order(values, 1, most_relevant_first=True).tolist() == [3, 4, 1, 2]
    lens = vl.Lens.demo()
    curves, summary = evaluate_relevance(
        lens, vl.data.shapes(4, seed=2), methods=["class_space", "random"], fractions=[0.0, 0.5], progress=False
    )
    assert set(curves.direction) == {"negative", "positive"} and len(curves) == 2 * 2 * 2
    data = vl.data.shapes(4, seed=2)
    unperturbed = np.mean([lens.trace(im).prediction.index == y for im, y in zip(data.images, data.labels)])
    assert (curves[curves.fraction == 0.0].accuracy == unperturbed).all()  # nothing removed yet
    assert summary.method.tolist() == ["class_space", "random"] and (summary.images == 4).all()
    assert summary.iou.between(0, 1).all() and summary.pointing_game.between(0, 1).all()


def test_diagnosis_variants_block_statistics_and_report():
    from vitlens_widgets.explain.diagnose import VARIANTS, block_statistics, diagnosis_markdown, variant_maps
    from vitlens_widgets.explain.evaluate import score_maps

    lens = vl.Lens.demo()
    data = vl.data.shapes(4, seed=2)
    maps = variant_maps(lens, data.images[0], int(data.labels[0]))
    assert list(maps) == list(VARIANTS)
    assert all(m.shape == (lens.tokens.n_patches,) and np.isfinite(m).all() for m in maps.values())
    reference = vl.explain.relevance(lens, data.images[0], cls=int(data.labels[0]))
    np.testing.assert_allclose(maps["class_space"], reference.map.reshape(-1), rtol=1e-5, atol=1e-6)

    def maps_for(i):
        label = int(data.labels[i])
        random = vl.explain.relevance(lens, data.images[i], cls=label, method="random", seed=i).map
        return variant_maps(lens, data.images[i], label) | {"random": random}

    curves, summary, per_image = score_maps(lens, data, maps_for, fractions=[0.0, 0.5], progress=False)
    assert per_image["class_space"].shape == (4, 2, 2)
    first = curves[(curves.method == "class_space") & (curves.direction == "negative")].accuracy.to_numpy()
    np.testing.assert_allclose(first, per_image["class_space"][:, 0].mean(0))
    blocks, summed = block_statistics(lens, data)
    assert len(blocks) == lens.depth and blocks.object_in_bottom.between(0, 1).all()
    assert 0 < summed["object_share"] < 1
    text = diagnosis_markdown(summary, per_image, curves, blocks, summed)
    assert "| softmax_first | yes |" in text and "Verdict" in text


def test_attention_control_is_cls_attention_summed_over_heads_and_blocks():
    from vitlens_widgets.explain.control import control_markdown, gradient_effect, paired_auc_gap
    from vitlens_widgets.explain.diagnose import variant_maps

    lens = vl.Lens.demo()
    data = vl.data.shapes(1, seed=2)
    maps = variant_maps(lens, data.images[0], int(data.labels[0]))
    trace = lens.trace(data.images[0])
    expected = np.zeros(lens.tokens.n_patches)
    for index in range(lens.depth):  # [CLS]'s softmax attention row, computed from the block's own q and k
        with torch.inference_mode():
            q, k, _ = lens.adapter.attention_qkv(index, trace.hidden["resid"][index][None])
            weights = ((q * lens.adapter.attention_scale(index)) @ k.transpose(-2, -1)).softmax(-1)
        expected += weights[0, :, 0, 1:].sum(0).numpy()
    np.testing.assert_allclose(maps["attention"], expected, rtol=1e-5)

    per_image = {
        "class_space": np.array([[[1, 0]], [[1, 1]]], bool).repeat(2, 1),
        "attention": np.array([[[1, 1]], [[1, 1]]], bool).repeat(2, 1),
        "attention_x_gradient": np.array([[[1, 1]], [[1, 1]]], bool).repeat(2, 1),
        "random": np.zeros((2, 2, 2), bool),
    }
    assert paired_auc_gap(per_image, "attention", "class_space")["negative"][0] == pytest.approx(0.25)
    assert gradient_effect(per_image) == {"negative": "same", "positive": "same"}
    summary = pd.DataFrame(
        {"method": list(per_image), "auc_negative": 0.5, "auc_positive": 0.5, "pointing_game": 0.5, "iou": 0.5}
    )
    assert "over attention?** No: attention × gradient against attention alone, negative curve: no measurable" in (
        control_markdown(per_image, summary)
    )
    later = np.zeros((8, 2, 2), bool)
    later[:, 1] = True  # positive curve: with the gradient the model stays right where attention alone fails
    worse = {"attention": np.zeros_like(later), "attention_x_gradient": later}
    assert gradient_effect(worse) == {"negative": "same", "positive": "worse"}
