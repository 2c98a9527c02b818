"""Dataset analyses, checked against direct computations on small cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model

import vitlens_widgets as vl
from vitlens_widgets.analysis import identifiability_by_block, object_context_test, token_groups
from vitlens_widgets.analysis.identifiability import paired_sign_flip_test


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    torch.manual_seed(0)
    model = make_model("vit", depth=2)
    model.reset_classifier(10)
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


@pytest.fixture(scope="module")
def data():
    return vl.data.shapes(6, seed=4)


def test_token_groups_follow_the_mask(lens):
    mask = np.zeros((64, 64), bool)
    mask[:16, :32] = True  # patches (0,0),(0,1) of the 4x4 grid are object
    groups = token_groups(lens, mask)
    assert np.flatnonzero(groups["object"]).tolist() == [1, 2]
    assert groups["context"].sum() == 14 and groups["cls"].tolist()[0] and groups["image"].sum() == 16
    with pytest.raises(ValueError, match="must cover the model's"):
        token_groups(lens, np.zeros((32, 32), bool))


def test_identifiability_by_block_equals_a_direct_computation(lens, data):
    df = identifiability_by_block(lens, data, site="mlp", batch_size=4, progress=False)
    for group in ("cls", "object", "context", "image"):
        expected_ident, expected_top1 = [], []
        for image, label, mask in zip(data.images, data.labels, data.masks):
            select = token_groups(lens, mask)[group]
            if not select.any():
                continue
            ident = lens.trace(image).identifiability(int(label), "mlp")[:, select]
            expected_ident.append(ident.mean(1))
            expected_top1.append((ident == 1.0).mean(1))
        rows = df[df.tokens == group].sort_values("layer")
        assert rows.layer.tolist() == [1, 2]
        np.testing.assert_allclose(rows.identifiability, np.mean(expected_ident, 0), rtol=1e-5)
        np.testing.assert_allclose(rows.top1_rate, np.mean(expected_top1, 0), rtol=1e-5)
        assert (rows.images == len(expected_ident)).all()


def test_perturbations_pass_through_to_the_traces(lens, data):
    base = identifiability_by_block(lens, data, progress=False)
    perturbed = identifiability_by_block(lens, data, progress=False, attention="self_only")
    layer0 = base[base.layer == 0].identifiability.to_numpy()
    np.testing.assert_allclose(perturbed[perturbed.layer == 0].identifiability, layer0)  # embeddings unchanged
    assert not np.allclose(perturbed[perturbed.layer == 2].identifiability, base[base.layer == 2].identifiability)


def test_sign_flip_test_on_known_cases():
    strong = np.column_stack([np.full(12, 0.5), np.zeros(12), np.r_[np.full(6, 1.0), np.full(6, -1.0)]])
    observed, p = paired_sign_flip_test(strong, 4000, seed=1)
    np.testing.assert_allclose(observed, [0.5, 0.0, 0.0])
    assert p[0] == pytest.approx(1 / 2**11, abs=2e-3)  # only the all-same-sign flips are as extreme
    assert p[1] == 1.0 and p[2] == 1.0


def test_object_context_test_reports_every_layer(lens, data):
    df = object_context_test(lens, data, n_permutations=200, progress=False)
    assert df.layer.tolist() == [0, 1, 2] and (df.permutations == 200).all()
    np.testing.assert_allclose(df.difference, df.object - df.context, atol=1e-6)
    assert ((df.p_value > 0) & (df.p_value <= 1)).all()
    with pytest.raises(ValueError, match="needs masks"):
        object_context_test(lens, list(zip(data.images, data.labels)), progress=False)


def test_sublayer_contributions_equal_a_direct_computation(lens, data):
    from vitlens_widgets.analysis import sublayer_contributions

    df = sublayer_contributions(lens, data, batch_size=4, progress=False)
    assert df.block.unique().tolist() == [1, 2]
    expected: dict[str, list] = {}
    for image, label, mask in zip(data.images, data.labels, data.masks):
        trace = lens.trace(image)
        resid, attn, mlp = trace.logits("resid"), trace.logits("attn"), trace.logits("mlp")
        hidden = trace.hidden_states
        mid = np.stack(
            [
                lens.adapter.readout(torch.from_numpy(hidden("resid")[b] + hidden("attn")[b])).detach().numpy()
                for b in range(2)
            ]
        )
        select = token_groups(lens, mask)["image"]
        rows = []
        for b in range(2):
            out1, prev1 = resid[b + 1].argmax(-1), resid[b].argmax(-1)
            a1, m1 = attn[b].argmax(-1), mlp[b].argmax(-1)
            rows.append(
                [
                    (attn[b][:, label] > resid[b][:, label])[select].mean(),
                    (mlp[b][:, label] > mid[b][:, label])[select].mean(),
                    (out1 == a1)[select].mean(),
                    (out1 == m1)[select].mean(),
                    (out1 == prev1)[select].mean(),
                    ((out1 != a1) & (out1 != m1) & (out1 != prev1))[select].mean(),
                ]
            )
        expected.setdefault("image", []).append(rows)
    got = df[df.tokens == "image"].sort_values("block")[
        ["attn_gain_rate", "mlp_gain_rate", "top1_from_attn", "top1_from_mlp", "top1_from_previous", "top1_new"]
    ]
    np.testing.assert_allclose(got.to_numpy(), np.mean(expected["image"], axis=0), atol=1e-6)


def test_perturbation_effects_compare_against_the_unperturbed_model(lens, data):
    from vitlens_widgets.analysis import perturbation_effects

    df = perturbation_effects(
        lens, data, {"self_only": {"attention": "self_only"}, "drop_context": {"drop": "context"}}, progress=False
    )
    assert set(df.perturbation) == {"self_only", "drop_context"}
    self_only = df[(df.perturbation == "self_only") & (df.tokens == "image")].sort_values("layer")
    base = identifiability_by_block(lens, data, progress=False)
    base_image = base[base.tokens == "image"].sort_values("layer")
    np.testing.assert_allclose(self_only.baseline, base_image.identifiability, rtol=1e-5)
    direct = identifiability_by_block(lens, data, progress=False, attention="self_only")
    np.testing.assert_allclose(
        self_only.identifiability, direct[direct.tokens == "image"].sort_values("layer").identifiability, rtol=1e-5
    )
    np.testing.assert_allclose(self_only.change, self_only.identifiability - self_only.baseline, atol=1e-7)
    dropped = df[(df.perturbation == "drop_context") & (df.tokens == "context")]
    assert dropped.empty  # every context token is gone: nothing left to measure
    expected_accuracy = np.mean([lens.trace(im).prediction.index == y for im, y in zip(data.images, data.labels)])
    assert df.baseline_accuracy.iloc[0] == pytest.approx(expected_accuracy)


def test_figures_are_built_from_the_dataframes(lens, data):
    from vitlens_widgets.analysis import sublayer_contributions
    from vitlens_widgets.plots import identifiability_figure, sublayer_figure

    df = identifiability_by_block(lens, data, progress=False)
    fig = identifiability_figure(df)
    labels = [m.labels[0] for m in fig.marks]
    assert labels == ["cls", "image", "object", "context"]
    np.testing.assert_allclose(fig.marks[0].y, df[df.tokens == "cls"].sort_values("layer").identifiability)
    sub = sublayer_figure(sublayer_contributions(lens, data, progress=False))
    assert len(sub.marks) == 6 and list(sub.marks[0].x) == [1, 2]
    with pytest.raises(ValueError, match="no rows for token group"):
        sublayer_figure(sublayer_contributions(lens, data, progress=False), tokens="dist")


def test_report_runs_end_to_end_and_states_each_finding():
    from vitlens_widgets.analysis.report import build_report
    from vitlens_widgets.demo.model import build_demo_model

    torch.manual_seed(0)
    report = build_report(vl.Lens(build_demo_model(depth=2).eval()), n_images=12, permutations=50, probe_images=10)
    for finding in (
        "rises with depth",
        "random-init copy",
        "object tokens more identifiable than context tokens",
        "removing the context tokens",
        "removing the object tokens",
        "attention raises the true class in more object than context tokens",
        "block to block",
        "self-only attention",
        "no attention from image tokens to [CLS]",
        "class-value agreement",
        "key-value agreement (MLP)",
        "key-value agreement (attention)",
        "misclassified",
        "probe order",
        "Deviations from the authors' code",
        "by construction",
    ):
        assert finding in report
    summary = report[report.index("## Every finding") : report.index("## What the demo data")]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:].isdigit()]
    verdicts = ("reproduces", "partly", "does not reproduce", "cannot be tested on this data")
    assert len(rows) == 19 and all(any(v in row.split(" | ")[-1] for v in verdicts) for row in rows)
    assert "| layer | cls | context | image | object |" in report


def test_ridge_fit_matches_the_normal_equations_and_leaves_the_bias_unpenalised():
    from vitlens_widgets.analysis import ridge_fit

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2)) + 5.0
    W = ridge_fit(X, Y, alpha=2.0)
    Xb = np.hstack([X, np.ones((40, 1))])
    P = 2.0 * np.eye(4)
    P[-1, -1] = 0
    np.testing.assert_allclose(W, np.linalg.solve(Xb.T @ Xb + P, Xb.T @ Y), rtol=1e-10)
    np.testing.assert_allclose(ridge_fit(X, Y, alpha=0.0)[-1], np.linalg.lstsq(Xb, Y, rcond=None)[0][-1], rtol=1e-8)


def test_probes_and_projection_are_scored_on_the_same_tokens(lens):
    from vitlens_widgets.analysis import images_to_match, probe_vs_projection

    train, test = vl.data.shapes(30, seed=7), vl.data.shapes(12, seed=8)
    df = probe_vs_projection(lens, train, test, train_sizes=[10, 30])
    assert set(df.method) == {"probe", "projection"} and set(df.tokens) == {"cls", "image"}
    projection = df[(df.method == "projection") & (df.tokens == "cls")].sort_values("layer")
    expected = [
        np.mean([lens.trace(im).rank(int(y), "resid")[layer, 0] == 0 for im, y in zip(test.images, test.labels)])
        for layer in range(3)
    ]
    np.testing.assert_allclose(projection.accuracy, expected)
    assert sorted(df[df.method == "probe"].train_images.unique()) == [10, 30]
    needed = images_to_match(df)
    assert needed.layer.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="train_sizes"):
        probe_vs_projection(lens, train, test, train_sizes=[31])
