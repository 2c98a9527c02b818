"""The paper's remaining analyses, each checked against a slow loop over lens.trace on a few images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_model

import vitlens_widgets as vl
from vitlens_widgets.analysis import token_groups
from vitlens_widgets.analysis.identifiability import paired_sign_flip_test
from vitlens_widgets.analysis.models import over_models, random_init_lens
from vitlens_widgets.analysis.paper import (
    attention_perturbation_test,
    block_change_rate,
    identifiability_vs_random,
    residual_match_formulas,
    sublayer_gain_by_location,
)
from vitlens_widgets.analysis.probe_ranking import fit_token_probes, probe_rank_sum, probe_ranked_removal
from vitlens_widgets.analysis.probes import probe_vs_projection, ridge_fit, strict_hits
from vitlens_widgets.analysis.removal import context_removal, forward_kept
from vitlens_widgets.analysis.report import format_p


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    torch.manual_seed(0)
    model = make_model("vit", depth=2)
    model.reset_classifier(10)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


@pytest.fixture(scope="module")
def data():
    return vl.data.shapes(6, seed=4)


def image_mean(values: np.ndarray, select: np.ndarray) -> np.ndarray:
    return values[:, select].mean(1)


def test_removing_tokens_per_image_in_one_batch_equals_tracing_each_image(lens, data):
    keep = np.ones((len(data), lens.tokens.n_tokens), bool)
    for i, mask in enumerate(data.masks):
        keep[i] &= ~token_groups(lens, mask)["context"]
    logits, output = forward_kept(lens, list(data.images), keep)
    for i, image in enumerate(data.images):
        trace = lens.trace(image, drop_tokens=np.flatnonzero(~keep[i]).tolist())
        np.testing.assert_allclose(logits[i], trace.logits("resid"), rtol=1e-4, atol=1e-4)
        assert np.isnan(logits[i][:, ~keep[i]]).all()
        assert output[i].argmax() == trace.prediction.index
    with pytest.raises(ValueError, match="prefix"):
        forward_kept(lens, list(data.images), np.zeros_like(keep))


def test_context_removal_equals_a_loop_over_traces(lens, data):
    df = context_removal(lens, data, n_permutations=200, batch_size=4, progress=False)
    for removed, kept in (("context", "object"), ("object", "context")):
        rates, base_rates, hits = [], [], []
        for image, label, mask in zip(data.images, data.labels, data.masks):
            groups = token_groups(lens, mask)
            if not groups[kept].any() or not groups[removed].any():
                continue
            trace = lens.trace(image, drop_tokens=np.flatnonzero(groups[removed]).tolist())
            rates.append((trace.rank(int(label))[-1, groups[kept]] == 0).mean())
            base_rates.append((lens.trace(image).rank(int(label))[-1, groups[kept]] == 0).mean())
            hits.append(trace.prediction.index == label)
        row = df[(df.removed == removed) & (df.layer == lens.depth)].iloc[0]
        assert row.kept == kept and row.images == len(rates)
        assert row.top1_rate == pytest.approx(np.mean(rates))
        assert row.baseline_top1_rate == pytest.approx(np.mean(base_rates))
        assert row.accuracy == pytest.approx(np.mean(hits))


def test_identifiability_vs_random_matches_both_models_traced_directly(lens, data):
    random_lens = random_init_lens(lens, seed=3)
    df = identifiability_vs_random(lens, data, random_lens=random_lens, n_permutations=500, progress=False)
    image = token_groups(lens, None)["image"]
    for which, one in (("", lens), ("random_", random_lens)):
        ranks = np.stack([one.trace(im).rank(int(y)) for im, y in zip(data.images, data.labels)])  # [n, L+1, T]
        rows = df[df.tokens == "image"].sort_values("layer")
        np.testing.assert_allclose(
            rows[f"{which}identifiability"], (1 - ranks[:, :, image] / 10).mean((0, 2)), rtol=1e-5
        )
        np.testing.assert_allclose(rows[f"{which}top1_rate"], (ranks[:, :, image] == 0).mean((0, 2)), rtol=1e-5)
        np.testing.assert_allclose(rows[f"{which}images_with_top1"], (ranks[:, :, image] == 0).any(2).mean(0))
    assert not np.allclose(df.identifiability, df.random_identifiability)


def test_random_init_copy_keeps_architecture_and_changes_weights(lens):
    other = random_init_lens(lens)
    assert other.depth == lens.depth and list(other.class_names) == list(lens.class_names)
    assert not torch.equal(other.model.head.weight, lens.model.head.weight)


def test_attention_gain_by_location_equals_a_loop(lens, data):
    df = sublayer_gain_by_location(lens, data, "attn", n_permutations=200, progress=False)
    diffs = []
    for image, label, mask in zip(data.images, data.labels, data.masks):
        trace, groups = lens.trace(image), token_groups(lens, mask)
        if not groups["object"].any() or not groups["context"].any():
            continue
        gain = trace.logits("attn")[..., label] > trace.logits("resid")[:-1, :, label]  # [L, T]
        diffs.append(image_mean(gain, groups["object"]) - image_mean(gain, groups["context"]))
    np.testing.assert_allclose(df.sort_values("block").difference, np.mean(diffs, 0), rtol=1e-5, atol=1e-7)
    _, p = paired_sign_flip_test(np.array(diffs), 200, 0)
    np.testing.assert_allclose(df.sort_values("block").p_value, p)


def test_block_change_rate_equals_a_loop(lens, data):
    df = block_change_rate(lens, data, progress=False)
    increase, change = [], []
    image = token_groups(lens, None)["image"]
    for im, label in zip(data.images, data.labels):
        logits = lens.trace(im).logits("resid")  # [L+1, T, C]
        increase.append((logits[1:, :, label] > logits[:-1, :, label])[:, image].mean(1))
        change.append((logits[1:].argmax(-1) != logits[:-1].argmax(-1))[:, image].mean(1))
    rows = df[df.tokens == "image"].sort_values("block")
    np.testing.assert_allclose(rows.logit_increase_rate, np.mean(increase, 0), rtol=1e-6)
    np.testing.assert_allclose(rows.top1_change_rate, np.mean(change, 0), rtol=1e-6)


def test_attention_perturbation_test_reports_the_top1_rate_of_perturbed_traces(lens, data):
    df = attention_perturbation_test(lens, data, n_permutations=200, progress=False)
    image = token_groups(lens, None)["image"]
    for name in ("self_only", "no_cls"):
        rate = [
            (lens.trace(im, attention=name).rank(int(y))[-1, image] == 0).mean()
            for im, y in zip(data.images, data.labels)
        ]
        row = df[(df.perturbation == name) & (df.layer == lens.depth)].iloc[0]
        assert row.top1_rate == pytest.approx(np.mean(rate))
    layer0 = df[df.layer == 0]
    np.testing.assert_allclose(layer0.top1_rate, layer0.baseline_top1_rate)  # embeddings are untouched


def test_residual_match_formulas_differ_only_by_the_mlp_test(lens, data):
    df = residual_match_formulas(lens, data, progress=False)
    assert (df.none_authors >= df["none"] - 1e-9).all()


def test_a_tied_first_place_is_a_miss():
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    assert strict_hits(scores, np.array([0, 0, 2])).tolist() == [False, True, True]


def test_layer0_cls_probe_is_constant_and_its_ties_do_not_count():
    """The issue's case: at layer 0 the [CLS] input is the same for every image, so the probe's scores are constant."""
    lens = vl.Lens.demo()
    train, test = vl.data.shapes(10, seed=5), vl.data.shapes(100, seed=2)
    df = probe_vs_projection(lens, train, test, train_sizes=[10])
    row = df[(df.layer == 0) & (df.tokens == "cls") & (df.method == "probe")].iloc[0]
    counts = np.bincount(train.labels, minlength=10)  # a constant probe scores each class by its training share
    leaders = np.flatnonzero(counts == counts.max())
    expected = 0.0 if len(leaders) > 1 else float((test.labels == leaders[0]).mean())
    assert row.accuracy == pytest.approx(expected)
    assert row.accuracy < 0.2


def test_batched_ridge_equals_one_fit_at_a_time(rng):
    features, targets = rng.normal(size=(3, 20, 5)), np.eye(4)[rng.integers(0, 4, 20)]
    batched = ridge_fit(features, targets, alpha=0.5)
    for i in range(3):
        np.testing.assert_allclose(batched[i], ridge_fit(features[i], targets, alpha=0.5), rtol=1e-10)


def test_probe_rank_sum_equals_scoring_each_probe(lens, data):
    weights = fit_token_probes(lens, vl.data.shapes(12, seed=9))
    hidden = np.stack([lens.trace(im).hidden_states("resid")[1:, 1:] for im in data.images])
    summed = probe_rank_sum(weights, hidden, data.labels)
    i, t = 2, 5
    expected = sum(
        int((scores > scores[data.labels[i]]).sum())
        for scores in (hidden[i, r, t] @ weights[r, t, :-1] + weights[r, t, -1] for r in range(lens.depth))
    )
    assert summed[i, t] == expected


def test_probe_ranked_removal_starts_from_the_models_accuracy(lens, data):
    curves, summary = probe_ranked_removal(
        lens, vl.data.shapes(12, seed=9), data, fractions=(0.0, 0.5), n_permutations=100, progress=False
    )
    accuracy = np.mean([lens.trace(im).prediction.index == y for im, y in zip(data.images, data.labels)])
    np.testing.assert_allclose(curves[curves.fraction == 0.0].accuracy, accuracy)
    assert set(summary.method) == {"probe", "projection", "random"} and (summary.reference == "projection").all()


def test_several_models_give_one_frame_with_a_model_column(lens, data):
    other = random_init_lens(lens)
    both = vl.analysis.identifiability_by_block({"a": lens, "b": other}, data, progress=False)
    alone = vl.analysis.identifiability_by_block(other, data, progress=False)
    assert both.columns[0] == "model" and set(both.model) == {"a", "b"}
    pd.testing.assert_frame_equal(both[both.model == "b"].drop(columns="model").reset_index(drop=True), alone)
    listed = block_change_rate([lens, other], data, progress=False)
    assert set(listed.model) == {"model 0", "model 1"}
    with pytest.raises(TypeError):
        over_models(lambda lens: lens)(42)


def test_p_values_at_the_permutation_floor_print_as_a_bound():
    assert format_p(1 / 10_001) == "≤ 1e-4" and format_p(0.0312) == "0.031" and format_p(1 / 1001, 1000) == "≤ 1e-3"


def test_figures_draw_the_frames_values(lens, data):
    from vitlens_widgets import plots

    removal = context_removal(lens, data, n_permutations=100, progress=False)
    fig = plots.context_removal_figure(removal)
    context = removal[removal.removed == "context"].sort_values("layer")
    np.testing.assert_allclose(fig.marks[0].y, context.top1_rate)
    np.testing.assert_allclose(fig.marks[1].y, context.baseline_top1_rate)
    curves = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "direction": "negative",
            "fraction": [0.0, 0.5] * 2,
            "accuracy": [1, 0.5, 1, 0.2],
        }
    )
    fig = plots.removal_curves_figure(curves)
    assert [m.labels[0] for m in fig.marks] == ["a", "b"]
    np.testing.assert_allclose(fig.marks[1].y, [1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        plots.removal_curves_figure(curves, "positive")
    both = vl.analysis.identifiability_by_block({"a": lens, "b": random_init_lens(lens)}, data, progress=False)
    fig = plots.model_comparison_figure(both, tokens="cls")
    np.testing.assert_allclose(fig.marks[0].x, [0, 0.5, 1])
    np.testing.assert_allclose(fig.marks[1].y, both[(both.model == "b") & (both.tokens == "cls")].identifiability)
    vs_random = identifiability_vs_random(lens, data, n_permutations=100, progress=False)
    fig = plots.random_init_figure(vs_random)
    np.testing.assert_allclose(fig.marks[1].y, vs_random[vs_random.tokens == "cls"].random_identifiability)
    gain = sublayer_gain_by_location(lens, data, n_permutations=100, progress=False)
    np.testing.assert_allclose(plots.location_gain_figure(gain).marks[1].y, gain.context)


def test_key_value_agreement_p_value_tests_agreement_against_the_random_class(lens, data):
    from vitlens_widgets.analysis import key_value_agreement
    from vitlens_widgets.analysis.memories import KeyCapture, memory_projections, random_other_classes

    df = key_value_agreement(lens, data, "attn", top_classes=2, n_permutations=100, progress=False)
    writes = np.argsort(-memory_projections(lens.model, 1, "attn"), axis=0)[:2]
    others = random_other_classes(data.labels, np.arange(len(data)), 10, seed=0)
    diffs = []
    for image, label, other in zip(data.images, data.labels, others):
        with KeyCapture(lens.model, "attn") as capture:
            lens.trace_batch([image])
        active = capture.keys[0][0, 0].topk(5).indices.numpy()  # [CLS] in block 1
        diffs.append(float((writes[:, active] == label).any()) - float((writes[:, active] == other).any()))
    row = df[(df.block == 1) & (df.tokens == "cls")].iloc[0]
    assert row.agreement - row.random_class == pytest.approx(np.mean(diffs))
    assert row.p_value == pytest.approx(paired_sign_flip_test(np.array(diffs)[:, None], 100, 0)[1][0])


def test_key_value_agreement_code_definition_and_outcome_split_equal_a_loop(lens, data):
    from vitlens_widgets.analysis import key_value_agreement
    from vitlens_widgets.analysis.memories import memory_projections

    df = key_value_agreement(lens, data, "mlp", top_classes=3, definition="code", by_outcome=True, progress=False)
    block = 2
    class_top = np.argsort(-memory_projections(lens.model, block, "mlp"), axis=1)[:, :3]  # [C, 3]
    per_outcome: dict[str, list[float]] = {}
    for image, label in zip(data.images, data.labels):
        trace = lens.trace(image)
        keys = lens.memory_keys(trace, block, "mlp")[0]  # [CLS]
        hit = np.isin(np.argsort(-keys)[:5], class_top[label]).any()
        outcome = "correct" if trace.prediction.index == label else "wrong"
        per_outcome.setdefault(outcome, []).append(float(hit))
    for outcome, hits in per_outcome.items():
        row = df[(df.block == block) & (df.tokens == "cls") & (df.outcome == outcome)].iloc[0]
        assert row.agreement == pytest.approx(np.mean(hits)) and row.images == len(hits)


def test_random_removal_orders_come_from_one_stream_by_position_in_the_data():
    from vitlens_widgets.analysis.probe_ranking import random_scores

    whole = np.random.default_rng(7).random((5, 16))  # what one pass over five images in one batch draws
    np.testing.assert_array_equal(random_scores(7, np.arange(5), 16), whole)
    np.testing.assert_array_equal(random_scores(7, np.array([3, 1]), 16), whole[[3, 1]])
