"""The explorer's traits and the trace on screen agree: what the kernel shows is what its traits say."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch
import traitlets

import vitlens_widgets as vl
import vitlens_widgets.explain
from vitlens_widgets.widgets.payload import token_topk


@pytest.fixture(scope="module")
def pooled_lens() -> vl.Lens:
    """A model without a class token: attention="no_cls" cannot be traced on it."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=10, class_token=False,
        global_pool="avg",
    )  # fmt: skip
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


@pytest.fixture
def images() -> list:
    return list(vl.data.shapes(3, seed=2).images)


@pytest.fixture
def explorer(lens, images) -> vl.Explorer:
    return vl.explore(lens, images)


def sent_keys(explorer: vl.Explorer, monkeypatch) -> list[set[str]]:
    """Record the keys of every state message the explorer sends (one set per message)."""
    sent: list[set[str]] = []
    monkeypatch.setattr(
        explorer, "send_state", lambda key=None: sent.append({key} if isinstance(key, str) else set(key))
    )
    return sent


# --- retracing only when the what-if options change ------------------------------------------------
def test_settings_that_leave_the_options_unchanged_do_not_retrace(explorer):
    version, trace = explorer.trace_version, explorer.trace
    explorer.renormalize = True  # only applies together with an attention perturbation
    explorer.perturb_blocks = [2]
    assert explorer.perturbation_options() == {}
    assert explorer.trace_version == version and explorer.trace is trace and explorer.service.version == version
    explorer.attention = "no_cls"  # now blocks and renormalize apply, all at once
    assert explorer.trace_version == version + 1
    assert explorer.trace.options == {"attention": "no_cls", "blocks": [2], "renormalize": True}
    explorer.attention, explorer.removed = "", []  # back to the unperturbed trace, once
    assert explorer.trace_version == version + 2 and explorer.trace is explorer.base_trace


# --- a what-if that cannot be traced is put back -----------------------------------------------------
def test_a_what_if_that_cannot_be_traced_is_put_back(pooled_lens, images):
    explorer = vl.explore(pooled_lens, images)
    explorer.attention, explorer.perturb_blocks = "self_only", [2]
    version, trace = explorer.trace_version, explorer.trace
    explorer.attention = "no_cls"
    assert explorer.error == "what-if settings put back: attention='no_cls' needs a model with a class token"
    assert (explorer.attention, explorer.perturb_blocks) == ("self_only", [2])  # the settings of the trace shown
    assert explorer.trace is trace and explorer.trace_version == version and explorer.service.version == version
    explorer.removed = [3]  # the next change traces from the settings on screen
    assert explorer.error == "" and explorer.trace_version == version + 1
    assert explorer.trace.options == {"attention": "self_only", "blocks": [2], "renormalize": False, "drop_tokens": [3]}


def test_a_view_asking_for_a_what_if_that_cannot_be_traced_is_put_back(pooled_lens, images, monkeypatch):
    explorer = vl.explore(pooled_lens, images)
    sent = sent_keys(explorer, monkeypatch)
    version = explorer.trace_version
    explorer.set_state({"attention": "no_cls", "renormalize": True, "perturb_blocks": [1]})
    assert (explorer.attention, explorer.renormalize, explorer.perturb_blocks) == ("", False, [])
    assert "needs a model with a class token" in explorer.error and explorer.trace_version == version
    assert {"attention", "renormalize", "perturb_blocks"} <= set().union(*sent)  # the view is put back too
    explorer.set_state({"attention": "self_only"})
    assert explorer.error == "" and explorer.trace.options["attention"] == "self_only"
    assert explorer.trace_version == version + 1


# --- only the user's choices come from a view ------------------------------------------------------
def test_a_view_cannot_set_the_kernels_traits(explorer, monkeypatch, caplog):
    sent = sent_keys(explorer, monkeypatch)
    before = {name: getattr(explorer, name) for name in ("trace_version", "prediction", "specs", "topk_probs", "error")}
    with caplog.at_level(logging.WARNING, logger="vitlens_widgets.widgets.explorer"):
        explorer.set_state(
            {"trace_version": 99, "prediction": 7, "specs": {}, "topk_probs": b"", "error": "hacked", "layer": 1}
        )
    assert {name: getattr(explorer, name) for name in before} == before
    assert explorer.layer == 1  # the user's choice in the same update is applied
    assert {"trace_version", "prediction", "specs", "topk_probs", "error"} in sent  # the view gets the kernel's back
    assert "trace_version" in caplog.text and "ignored" in caplog.text


# --- the view's choices the kernel does not act on come as a quiet `state` request ------------------
def replies(explorer: vl.Explorer, monkeypatch) -> list[dict]:
    """Record every custom message the explorer sends (its replies)."""
    sent: list[dict] = []
    monkeypatch.setattr(explorer, "send", lambda content, buffers=None: sent.append(content))
    return sent


def test_a_state_request_sets_the_views_choices_and_sends_them_back_as_the_kernels(explorer, monkeypatch):
    answers, sent = replies(explorer, monkeypatch), sent_keys(explorer, monkeypatch)
    state = {"layer": 2, "cls": 3, "selected": [5, 9], "highlight": 5, "metric": "logit"}
    explorer._answer(explorer, {"kind": "state", "id": 11, "state": state, "quiet": True}, [])
    assert {name: getattr(explorer, name) for name in state} == state  # Python sees what the view shows
    assert sent == [set(state)]  # the view's model holds them as the kernel's: nothing left to send
    assert answers == [{"kind": "state", "id": 11}]


def test_a_refused_state_is_put_back_and_explained(explorer, monkeypatch):
    answers, sent = replies(explorer, monkeypatch), sent_keys(explorer, monkeypatch)
    layer = explorer.layer
    explorer._answer(explorer, {"kind": "state", "id": 12, "state": {"layer": 99}}, [])
    assert explorer.layer == layer and explorer.error.startswith("Not applied") and "99" in explorer.error
    assert {"layer"} in sent and answers == [{"kind": "state", "id": 12}]
    explorer._answer(explorer, {"kind": "state", "id": 13, "state": {"layer": 1}}, [])
    assert explorer.layer == 1 and explorer.error == ""


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"image_index": 1}, "sets only layer, highlight, selected, cls, metric, not image_index"),
        ({"layer": 1, "attention": "no_cls"}, "not attention"),
        ({}, "state must be an object"),
        ([1], "state must be an object"),
    ],
)
def test_a_state_request_sets_only_the_choices_the_kernel_does_not_act_on(explorer, monkeypatch, state, message):
    answers = replies(explorer, monkeypatch)
    before = (explorer.image_index, explorer.layer, explorer.attention, explorer.trace_version)
    explorer._answer(explorer, {"kind": "state", "id": 14, "state": state}, [])
    assert (explorer.image_index, explorer.layer, explorer.attention, explorer.trace_version) == before
    ((answer,),) = [answers]
    assert answer["kind"] == "error" and answer["id"] == 14 and answer["request"] == "state"
    assert message in answer["message"]


def test_the_state_traits_are_the_same_on_both_sides():
    import re
    from pathlib import Path

    from vitlens_widgets.widgets.explorer import VIEW_TRAITS
    from vitlens_widgets.widgets.protocol import STATE_TRAITS

    source = (Path(__file__).parents[1] / "js" / "protocol.ts").read_text()
    (listed,) = re.findall(r"STATE_TRAITS = \[([^\]]*)\] as const", source)
    assert tuple(re.findall(r'"(\w+)"', listed)) == STATE_TRAITS
    assert set(STATE_TRAITS) <= VIEW_TRAITS


def test_every_trait_is_either_the_users_or_the_kernels():
    from vitlens_widgets.widgets.explorer import KERNEL_TRAITS, VIEW_TRAITS

    assert {"layer", "cls", "site", "image_index", "removed", "attention"} <= VIEW_TRAITS
    assert {"trace_version", "prediction", "specs", "topk_site", "image_png", "error"} <= KERNEL_TRAITS
    assert set(vl.Explorer.class_own_traits(sync=True)) == VIEW_TRAITS | KERNEL_TRAITS


# --- a new image: relevance once, or the image shown stays --------------------------------------------
def test_relevance_is_computed_once_when_the_image_changes(explorer, lens, images, monkeypatch):
    explorer.relevance_method = "class_space"
    prediction = lens.trace(images[1]).prediction.index
    explorer.cls = (prediction + 1) % lens.num_classes  # the new image changes the class as well
    calls: list[tuple] = []
    real = vitlens_widgets.explain.relevance

    def counted(lens, image, cls, method):
        calls.append((image is images[1], cls))
        return real(lens, image, cls=cls, method=method)

    monkeypatch.setattr(vitlens_widgets.explain, "relevance", counted)
    explorer.image_index = 1
    assert calls == [(True, prediction)]
    expected = real(lens, images[1], cls=prediction, method="class_space")
    maps = np.frombuffer(explorer.relevance_maps, np.float32).reshape(explorer.relevance_rows, -1)
    np.testing.assert_allclose(maps[-1], expected.map.reshape(-1), rtol=1e-5)


def test_an_image_that_cannot_be_shown_leaves_the_one_shown(explorer, tmp_path):
    version, trace = explorer.trace_version, explorer.trace
    explorer._images[1] = tmp_path / "deleted.png"  # gone since the gallery was checked
    with pytest.raises(traitlets.TraitError, match="image 1 cannot be shown"):
        explorer.image_index = 1
    assert explorer.image_index == 0 and explorer.service.image == 0
    assert explorer.trace is trace and explorer.trace_version == version
    explorer.image_index = 2  # the gallery still works
    assert explorer.service.image == 2 and explorer.trace_version == version + 1


def test_a_view_asking_for_an_image_that_cannot_be_shown_is_put_back(explorer, tmp_path, monkeypatch):
    sent = sent_keys(explorer, monkeypatch)
    explorer._images[1] = tmp_path / "deleted.png"
    explorer.set_state({"image_index": 1})
    assert explorer.image_index == 0 and explorer.service.image == 0
    assert explorer.error.startswith("Not applied: image 1 cannot be shown")
    assert any("image_index" in keys for keys in sent)


def test_a_new_image_keeps_the_what_if_settings(explorer, lens, images):
    explorer.attention, explorer.removed = "self_only", [4]
    explorer.image_index = 2
    expected = lens.trace(images[2], attention="self_only", drop_tokens=[4])
    np.testing.assert_array_equal(explorer.trace.logits("mlp"), expected.logits("mlp"))
    assert explorer.service.trace is explorer.trace and explorer.service.image == 2
    assert explorer.base_trace is lens.trace(images[2])


# --- top-k tables say which site they are for ------------------------------------------------------
def test_topk_tables_come_with_their_site_in_one_message(explorer, monkeypatch):
    assert explorer.topk_site == "resid"
    sent = sent_keys(explorer, monkeypatch)
    explorer.site = "mlp"
    assert explorer.topk_site == "mlp"
    assert any({"topk_site", "topk_indices", "topk_probs"} <= keys for keys in sent)
    indices, _ = token_topk(explorer.trace, "mlp")
    np.testing.assert_array_equal(np.frombuffer(explorer.topk_indices, np.int16).reshape(indices.shape), indices)
