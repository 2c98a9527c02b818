"""The capture is right: hidden states are the model's own, and readouts its own logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TOKEN_POOLED, make_model, random_image

import vitlens_widgets as vl


def block_io(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Input of block 1, output of every block and the logits, captured with plain hooks on model(x)."""
    captured: dict[str, list] = {"in": [], "out": []}
    handles = [model.blocks[0].register_forward_pre_hook(lambda m, args: captured["in"].append(args[0]))]
    handles += [b.register_forward_hook(lambda m, i, o: captured["out"].append(o)) for b in model.blocks]
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    return captured["in"][0], captured["out"], logits


def test_residual_stream_is_the_sum_of_sublayer_updates(family, rng):
    lens = vl.Lens(make_model(family))
    trace = lens.trace(random_image(rng))
    resid, attn, mlp = (trace.hidden_states(s) for s in ("resid", "attn", "mlp"))
    assert resid.shape[0] == lens.depth + 1 and attn.shape[0] == mlp.shape[0] == lens.depth
    np.testing.assert_allclose(resid[1:], resid[:-1] + attn + mlp, atol=1e-5)


def test_residual_stream_matches_the_models_own_block_outputs(family, rng):
    model = make_model(family)
    lens = vl.Lens(model)
    image = random_image(rng)
    trace = lens.trace(image)
    block_in, block_out, _ = block_io(model, lens.prepare(image).tensor[None])
    resid = trace.hidden_states("resid")
    np.testing.assert_allclose(resid[0], block_in[0].numpy(), atol=1e-5)
    for b, out in enumerate(block_out, start=1):
        np.testing.assert_allclose(resid[b], out[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("family_name", ["vit", "layerscale", "registers"])
def test_sublayer_updates_match_layerscale_outputs(family_name, rng):
    """attn/mlp are the actual updates after LayerScale, as captured at ls1/ls2 during the model's own forward."""
    model = make_model(family_name)
    lens = vl.Lens(model)
    image = random_image(rng)
    trace = lens.trace(image)
    captured: dict[str, list] = {"attn": [], "mlp": []}
    for b in model.blocks:
        b.ls1.register_forward_hook(lambda m, i, o: captured["attn"].append(o[0].detach().clone()))
        b.ls2.register_forward_hook(lambda m, i, o: captured["mlp"].append(o[0].detach().clone()))
    with torch.no_grad():
        model(lens.prepare(image).tensor[None])
    for site in ("attn", "mlp"):
        np.testing.assert_allclose(trace.hidden_states(site), torch.stack(captured[site]).numpy(), atol=1e-6)


@pytest.mark.parametrize("family_name", TOKEN_POOLED)
def test_last_cls_projection_equals_model_logits(family_name, rng):
    model = make_model(family_name)
    lens = vl.Lens(model)
    image = random_image(rng)
    with torch.no_grad():
        expected = model(lens.prepare(image).tensor[None])[0].numpy()
    trace = lens.trace(image)
    np.testing.assert_allclose(trace.logits("resid")[-1, 0], expected, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(trace.output_logits, expected, atol=1e-6)
    assert trace.prediction.index == int(np.argmax(expected))


def test_distilled_readout_averages_both_heads(rng):
    model = make_model("deit_distilled")
    lens = vl.Lens(model)
    image = random_image(rng)
    trace = lens.trace(image)
    final = torch.from_numpy(trace.hidden_states("resid")[-1])
    with torch.no_grad():
        normed = model.norm(final)
        by_hand = ((model.head(normed) + model.head_dist(normed)) / 2).numpy()
        model_out = model(lens.prepare(image).tensor[None])[0]
        timm_inference = (model.head(normed[0]) + model.head_dist(normed[1])) / 2
    np.testing.assert_allclose(trace.logits("resid")[-1], by_hand, atol=1e-5)
    # the model's own output: head on [CLS], head_dist on [DIST], averaged
    np.testing.assert_allclose(model_out.numpy(), timm_inference.numpy(), atol=1e-5)
    np.testing.assert_allclose(trace.output_logits, model_out.numpy(), atol=1e-6)


def test_avg_pool_model_output_is_head_of_mean_image_token(rng):
    model = make_model("avg_pool")
    lens = vl.Lens(model)
    trace = lens.trace(random_image(rng))
    assert trace.tokens.prefix == ()
    final = torch.from_numpy(trace.hidden_states("resid")[-1])
    with torch.no_grad():
        by_hand = model.head(model.fc_norm(final.mean(0))).numpy()
        per_token = model.head(model.fc_norm(final)).numpy()
    np.testing.assert_allclose(trace.output_logits, by_hand, atol=1e-5)
    np.testing.assert_allclose(trace.logits("resid")[-1], per_token, atol=1e-5)


@pytest.mark.parametrize("family_name", ["vit", "deit_distilled", "eva"])
def test_logits_and_ranks_match_a_handwritten_computation(family_name, rng):
    """Hooks + head(norm(x)) + a full sort, written out by hand, agree with the engine exactly."""
    model = make_model(family_name)
    lens = vl.Lens(model)
    image = random_image(rng)
    trace = lens.trace(image)
    block_in, block_out, _ = block_io(model, lens.prepare(image).tensor[None])
    states = [block_in[0]] + [o[0] for o in block_out]
    with torch.no_grad():
        if family_name == "deit_distilled":
            logits = [((model.head(model.norm(s)) + model.head_dist(model.norm(s))) / 2).numpy() for s in states]
        else:
            logits = [model.head(model.fc_norm(model.norm(s))).numpy() for s in states]
    logits = np.stack(logits)
    np.testing.assert_allclose(trace.logits("resid"), logits, atol=1e-5)
    for cls in (0, 3, lens.num_classes - 1):
        order = np.argsort(-logits, axis=-1, kind="stable")
        rank_by_sort = np.argmax(order == cls, axis=-1)
        np.testing.assert_array_equal(trace.rank(cls, "resid"), rank_by_sort)
        expected = np.float32(1) - rank_by_sort.astype(np.float32) / np.float32(lens.num_classes)
        np.testing.assert_array_equal(trace.identifiability(cls, "resid"), expected)


def test_shapes_and_dtypes_of_every_site(rng):
    lens = vl.Lens(make_model("registers", depth=3))
    trace = lens.trace(random_image(rng))
    L, T, C = 3, lens.tokens.n_tokens, lens.num_classes
    assert trace.tokens.prefix == ("cls", "reg0", "reg1", "reg2", "reg3")
    assert T == 5 + 16
    assert trace.logits("resid").shape == (L + 1, T, C) and trace.logits("resid").dtype == np.float32
    for site in ("attn", "mlp"):
        assert trace.logits(site).shape == (L, T, C)
        assert trace.probs(site).shape == (L, T, C)
        np.testing.assert_allclose(trace.probs(site).sum(-1), 1.0, atol=1e-5)
    assert trace.rank(1, "resid").dtype == np.int32 and trace.rank(1, "resid").shape == (L + 1, T)
    assert trace.identifiability(1, "attn").dtype == np.float32 and trace.identifiability(1, "attn").shape == (L, T)
