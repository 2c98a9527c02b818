"""The course lab's checks: right answers pass, wrong ones get a hint, missing ones a reminder."""

from __future__ import annotations

import numpy as np
import pytest

import vitlens_widgets as vl
from vitlens_widgets import lab


@pytest.fixture(scope="module")
def setup():
    lens = vl.Lens.demo()
    data = vl.data.shapes(6, seed=2)
    i = 5
    return lens, data, lens.trace(data.images[i]), int(data.labels[i]), data.masks[i]


def test_first_top1_layer(setup):
    _, _, trace, label, _ = setup
    ranks = trace.rank(label, "resid")[:, 0]
    expected = int(np.flatnonzero(ranks == 0)[0])
    assert lab.check_first_top1_layer(expected, trace, label)
    wrong = lab.check_first_top1_layer(expected + 1, trace, label)
    assert not wrong and "Not quite" in repr(wrong)
    assert repr(lab.check_first_top1_layer(..., trace, label)).startswith("… Not answered yet")


def test_identifiability_function_catches_ties_and_bugs():
    assert lab.check_identifiability_function(lambda x, c: 1 - (x > x[:, [c]]).sum(1) / x.shape[1])
    counts_itself = lab.check_identifiability_function(lambda x, c: 1 - (x >= x[:, [c]]).sum(1) / x.shape[1])
    assert not counts_itself and "first mismatch" in repr(counts_itself)
    sort_based = lab.check_identifiability_function(
        lambda x, c: 1 - np.argsort(np.argsort(-x, 1, kind="stable"), 1)[:, c] / x.shape[1]
    )
    assert not sort_based  # a sort breaks ties arbitrarily
    raised = lab.check_identifiability_function(lambda x, c: x.nope)
    assert not raised and "AttributeError" in repr(raised)

    def unfinished(logits, cls): ...

    assert repr(lab.check_identifiability_function(unfinished)).startswith("… Not answered")


def test_object_context(setup):
    lens, _, trace, label, mask = setup
    groups = vl.analysis.token_groups(lens, mask)
    values = trace.identifiability(label, "resid")[6]
    answer = (values[groups["object"]].mean(), values[groups["context"]].mean())
    assert lab.check_object_context(answer, lens, trace, mask, label, 6)
    assert not lab.check_object_context(answer[::-1], lens, trace, mask, label, 6) or answer[0] == answer[1]
    assert not lab.check_object_context("high", lens, trace, mask, label, 6)


def test_sublayer_and_self_only(setup):
    lens, data, trace, label, _ = setup
    bigger = "attn" if trace.logits("attn")[5, 0, label] > trace.logits("mlp")[5, 0, label] else "mlp"
    assert lab.check_sublayer(bigger.upper(), trace, label, 6)
    assert not lab.check_sublayer({"attn": "mlp", "mlp": "attn"}[bigger], trace, label, 6)
    change = lab.self_only_change(lens, data.images, [4, 5, 6])
    assert lab.check_self_only("up" if change > 0 else "down", lens, data.images, [4, 5, 6])
    assert not lab.check_self_only("down" if change > 0 else "up", lens, data.images, [4, 5, 6])


def test_pointing(setup):
    lens, _, _, _, mask = setup
    on_object = vl.analysis.token_groups(lens, mask)["object"][1:].reshape(lens.tokens.grid)
    relevance = on_object.astype(np.float32)  # a perfect map: its top patch is on the object
    assert lab.check_pointing(True, lens, relevance, mask)
    assert not lab.check_pointing(False, lens, relevance, mask)
    assert lab.check_pointing(False, lens, 1 - relevance, mask)
