"""Key-value memories on hand-built weights where the answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model

import vitlens_widgets as vl
from vitlens_widgets.analysis import (
    class_value_agreement,
    key_value_agreement,
    memory_projections,
    top_classes_per_memory,
    top_memories_per_class,
)
from vitlens_widgets.analysis.memories import KeyCapture, random_init_copy


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    model = make_model("vit", depth=2)
    model.reset_classifier(10)
    with torch.no_grad():
        model.head.weight.normal_()
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


def test_projection_is_class_embeddings_times_values(lens):
    model = lens.model
    expected = (model.head.weight @ model.blocks[1].mlp.fc2.weight).detach().numpy()
    np.testing.assert_allclose(memory_projections(model, 2, "mlp"), expected, rtol=1e-5, atol=1e-6)
    attn = memory_projections(model, 1, "attn", normalize=True)
    assert attn.shape == (10, 192) and np.abs(attn).max() <= 1.0 + 1e-6


def test_planted_memory_writes_its_class(lens):
    model = lens.model
    with torch.no_grad():
        saved = model.blocks[0].mlp.fc2.weight[:, 7].clone()
        model.blocks[0].mlp.fc2.weight[:, 7] = model.head.weight[3] * 10  # memory 7 writes class 3
    try:
        by_memory = top_classes_per_memory(lens, 1, "mlp", k=2)
        assert by_memory[(by_memory.memory == 7) & (by_memory["rank"] == 0)]["class"].item() == 3
        by_class = top_memories_per_class(lens, 1, "mlp", k=3)
        assert by_class[(by_class["class"] == 3) & (by_class["rank"] == 0)].memory.item() == 7
        agreement = class_value_agreement(lens, "mlp")
        assert agreement.block.tolist() == [1, 2] and (agreement.p_value <= 1).all()
    finally:
        with torch.no_grad():
            model.blocks[0].mlp.fc2.weight[:, 7] = saved


def test_class_value_agreement_detects_aligned_values():
    model = make_model("vit", depth=1)
    model.reset_classifier(10)
    with torch.no_grad():
        model.head.weight.normal_()
        model.blocks[0].mlp.fc2.weight[:, :10] = model.head.weight.T  # one memory per class, perfectly aligned
    lens = vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))
    df = class_value_agreement(lens, "mlp", random_model=random_init_copy(model, seed=1))
    assert df.trained.item() == pytest.approx(1.0, abs=1e-5)
    assert df.random.item() < 0.6 and df.p_value.item() < 0.01


def test_key_capture_records_fc1_outputs_before_the_activation(lens):
    image = vl.data.shapes(1, seed=0).images[0]
    with KeyCapture(lens.model, "mlp") as capture:
        trace = lens.trace_batch([image])[0]
    block = lens.model.blocks[0]
    mid = torch.from_numpy(trace.hidden_states("resid")[0] + trace.hidden_states("attn")[0])
    expected = block.mlp.fc1(block.norm2(mid)).detach().numpy()
    np.testing.assert_allclose(capture.keys[0][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert len(capture.keys) == 2 and not lens.model.blocks[0].mlp.fc1._forward_hooks


def test_key_capture_ignores_forward_passes_of_other_threads(lens):
    """A widget tracing from a kernel subshell must not put its keys into a running analysis."""
    import threading

    image = vl.data.shapes(1, seed=4).images[0]
    with KeyCapture(lens.model, "mlp") as capture:
        other = threading.Thread(target=lambda: lens.trace(image, cache=False))
        other.start()
        other.join()
        assert capture.keys == []
        lens.trace(image, cache=False)
        assert len(capture.keys) == lens.depth


def test_key_value_agreement_matches_a_direct_count(lens):
    data = vl.data.shapes(4, seed=3)
    df = key_value_agreement(lens, data, "attn", batch_size=2, progress=False)
    writes = np.argsort(-memory_projections(lens.model, 2, "attn"), axis=0)[:5]
    rates = []
    for image, label in zip(data.images, data.labels):
        with KeyCapture(lens.model, "attn") as capture:
            lens.trace_batch([image])
        active = capture.keys[1][0].topk(5, dim=-1).indices.numpy()  # [T, 5]
        hits = [(writes[:, active[t]] == label).any() for t in range(1, active.shape[0])]
        rates.append(np.mean(hits))
    row = df[(df.block == 2) & (df.tokens == "image")]
    assert row.agreement.item() == pytest.approx(np.mean(rates))
    assert 0 <= row.random_class.item() <= 1


@pytest.mark.parametrize("kind", ["mlp", "attn"])
def test_lens_memory_keys_match_the_captured_forward(lens, kind):
    image = vl.data.shapes(1, seed=5).images[0]
    with KeyCapture(lens.model, kind) as capture:
        trace = lens.trace_batch([image])[0]
    for block in (1, 2):
        np.testing.assert_allclose(
            lens.memory_keys(trace, block, kind), capture.keys[block - 1][0].numpy(), rtol=1e-4, atol=1e-5
        )


def test_memory_keys_honour_perturbations(lens):
    image = vl.data.shapes(1, seed=5).images[0]
    with KeyCapture(lens.model, "attn") as capture:
        trace = lens.trace_batch([image], attention="no_cls", drop_tokens=[3])[0]
    keys = lens.memory_keys(trace, 2, "attn")
    kept = [t for t in range(keys.shape[0]) if t != 3]
    np.testing.assert_allclose(keys[kept], capture.keys[1][0].numpy()[kept], rtol=1e-4, atol=1e-5)
    assert np.isnan(keys[3]).all()


def test_memory_agreement_figure_shows_trained_and_random(lens):
    from vitlens_widgets.plots import memory_agreement_figure

    df = class_value_agreement(lens, "mlp")
    fig = memory_agreement_figure(df)
    assert [m.labels[0] for m in fig.marks] == ["mlp (trained)", "mlp (random init)"]
    np.testing.assert_allclose(fig.marks[0].y, df.trained)
