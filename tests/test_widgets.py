"""The explorer's kernel side: traits, message handling, validation and serialisation."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import timm
import torch
import traitlets

import vitlens_widgets as vl
from vitlens_widgets.widgets.payload import metric_slices, token_topk


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=64, num_classes=10)
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


@pytest.fixture
def explorer(lens) -> vl.Explorer:
    return vl.explore(lens, list(vl.data.shapes(3, seed=2).images))


@pytest.fixture
def sent(explorer, monkeypatch) -> list:
    messages: list = []
    monkeypatch.setattr(explorer.view, "send", lambda content, buffers=None: messages.append((content, buffers)))
    return messages


def test_view_starts_on_the_prediction_at_the_last_layer(explorer, lens):
    view = explorer.view
    trace = lens.trace(vl.data.shapes(1, seed=2).images[0])
    assert view.token_layout == {"depth": 3, "grid": [4, 4], "prefix": ["cls"], "n_tokens": 17, "image_size": [64, 64]}
    assert view.cls == view.prediction == trace.prediction.index
    assert view.layer == 3 and view.site == "resid" and view.metric == "identifiability"
    assert view.class_names == list(vl.data.CLASS_NAMES) and view.n_images == 3
    assert view.image_png.startswith(b"\x89PNG")


def test_topk_tables_round_trip_as_binary(explorer):
    view = explorer.view
    indices = np.frombuffer(view.topk_indices, dtype=np.int16).reshape(4, 17, 5)
    probs = np.frombuffer(view.topk_probs, dtype=np.float32).reshape(4, 17, 5)
    expected_indices, expected_probs = token_topk(view.trace, "resid")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(probs, expected_probs)
    view.site = "mlp"
    assert len(view.topk_indices) == 3 * 17 * 5 * 2  # attn/mlp have no layer 0


def test_slice_requests_are_answered_with_float32_buffers(explorer, sent):
    explorer.view._handle_message(
        explorer.view, {"type": "slices", "id": 7, "site": "attn", "metric": "probability", "classes": [2, 5]}, []
    )
    header, buffers = sent[-1]
    assert header["type"] == "slices" and header["id"] == 7 and header["classes"] == [2, 5]
    assert (header["rows"], header["tokens"]) == (3, 17)
    data = np.frombuffer(buffers[0], dtype=np.float32).reshape(2, 3, 17)
    np.testing.assert_array_equal(data, metric_slices(explorer.view.trace, "attn", "probability", [2, 5]))
    np.testing.assert_allclose(data[0], explorer.view.trace.probs("attn")[..., 2], rtol=1e-5)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"site": "residual", "metric": "logit", "classes": [1]}, "unknown site"),
        ({"site": "resid", "metric": "rank", "classes": [1]}, "unknown metric"),
        ({"site": "resid", "metric": "logit", "classes": [10]}, "out of range"),
        ({"site": "resid", "metric": "logit", "classes": ["1"]}, "out of range"),
        ({"site": "resid", "metric": "logit", "classes": []}, "list of 1..256"),
        ({"site": "resid", "metric": "logit", "classes": 3}, "list of 1..256"),
    ],
)
def test_bad_requests_get_an_error_reply_not_a_crash(explorer, sent, request_, message):
    explorer.view._handle_message(explorer.view, {"type": "slices", "id": 3, **request_}, [])
    header, _ = sent[-1]
    assert header["type"] == "error" and header["id"] == 3 and re.search(message, header["message"])


def test_unknown_messages_and_pings(explorer, sent):
    explorer.view._handle_message(explorer.view, {"type": "ping", "id": 4}, [])
    assert sent[-1][0] == {"type": "pong", "id": 4}
    explorer.view._handle_message(explorer.view, {"type": "launch"}, [])
    assert sent[-1][0]["type"] == "error"
    explorer.view._handle_message(explorer.view, "not a dict", [])
    assert sent[-1][0]["type"] == "error"


@pytest.mark.parametrize(
    ("trait", "value"), [("cls", 10), ("cls", -1), ("site", "x"), ("metric", "rank"), ("layer", 4), ("selected", [17])]
)
def test_invalid_state_is_rejected(explorer, trait, value):
    with pytest.raises(traitlets.TraitError):
        setattr(explorer.view, trait, value)


def test_changing_site_pushes_fresh_slices_ahead_of_time(explorer, sent):
    explorer.view.site = "attn"
    pushed = [c for c, _ in sent if c.get("type") == "slices"]
    assert pushed and pushed[-1]["id"] == -1 and pushed[-1]["site"] == "attn"
    assert pushed[-1]["classes"] == list(range(10))  # small models: every class


def test_gallery_navigation_traces_the_next_image(explorer, lens):
    explorer.view.image_index = 2
    expected = lens.trace(vl.data.shapes(3, seed=2).images[2])
    assert explorer.view.trace is expected
    assert explorer.view.prediction == expected.prediction.index


def test_trajectories_follow_class_selection_and_layer(explorer):
    view, plot = explorer.view, explorer.plot
    lines = [m for m in plot.figure.marks if m is not plot.marker]
    assert [m.labels[0] for m in lines] == ["[CLS]", "image tokens (mean)"]
    np.testing.assert_allclose(lines[0].y, view.current_slice()[:, 0])
    view.selected = [5, 9]
    lines = [m for m in plot.figure.marks if m is not plot.marker]
    assert [m.labels[0] for m in lines][2:] == ["patch 1,0", "patch 2,0"]
    view.cls = (view.cls + 1) % 10
    new_lines = [m for m in plot.figure.marks if m is not plot.marker]
    np.testing.assert_allclose(new_lines[0].y, view.current_slice()[:, 0])
    view.layer = 1
    assert list(plot.marker.x) == [1, 1]
    plot._on_layer(2)  # a click on the plot moves the slider
    assert view.layer == 2


def test_hovering_a_line_highlights_its_token(explorer):
    explorer.view.selected = [6]
    explorer._set_highlight(6)
    assert explorer.view.highlight == 6


def test_export_html_embeds_the_same_numbers_as_float16(lens, tmp_path):
    images = vl.data.shapes(2, seed=2).images
    path = tmp_path / "page.html"
    size = vl.export_html(lens, images, path)
    html = path.read_text()
    assert size == len(html.encode()) and "<script>" in html
    payload = json.loads(
        re.search(r'<script id="vitlens-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    assert payload["complete"] and len(payload["images"]) == 2
    first = payload["images"][0]
    raw = np.frombuffer(base64.b64decode(first["slices"]["mlp|logit"]), dtype=np.float16).reshape(10, 3, 17)
    expected = metric_slices(lens.trace(images[0]), "mlp", "logit", first["classes"])
    np.testing.assert_allclose(raw.astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_explore_accepts_a_model_or_name_and_rejects_nonsense(lens):
    image = vl.data.shapes(1, seed=2).images[0]
    assert vl.explore(lens.model, image).view.n_images == 1
    with pytest.raises(TypeError, match="Lens, a timm model or a model name"):
        vl.explore(42, image)
    with pytest.raises(ValueError, match="at least one image"):
        vl.explore(lens, [])


def test_perturbations_retrace_and_bump_the_version(explorer, lens, sent):
    view = explorer.view
    version = view.trace_version
    view.attention = "self_only"
    view.perturb_blocks = [2, 3]
    assert view.trace_version == version + 2
    expected = lens.trace(vl.data.shapes(1, seed=2).images[0], attention="self_only", blocks=[2, 3])
    assert view.trace is expected and view.prediction == expected.prediction.index
    assert view.base_prediction == lens.trace(vl.data.shapes(1, seed=2).images[0]).prediction.index
    pushed = [c for c, _ in sent if c.get("type") == "slices"]
    assert pushed[-1]["version"] == view.trace_version
    view.removed = [5, 3, 5]
    assert view.removed == [3, 5] and view.trace.options["drop_tokens"] == [3, 5]
    with pytest.raises(traitlets.TraitError, match="only image tokens"):
        view.removed = [0]


def test_invalid_perturbation_is_reported_not_raised(explorer):
    view = explorer.view
    view.removed = list(range(1, 17))  # every image token
    assert "every image token" in view.error


def test_memory_requests_return_top_memories_with_their_classes(explorer, lens, sent):
    view = explorer.view
    view._handle_message(view, {"type": "memories", "id": 9, "token": 4, "layer": 2, "site": "mlp"}, [])
    header, buffers = sent[-1]
    assert header["type"] == "memories" and header["kind"] == "mlp" and len(header["memories"]) == 5
    keys = lens.memory_keys(view.trace, 2, "mlp")[4]
    np.testing.assert_array_equal(header["memories"], np.argsort(-keys)[:5])
    np.testing.assert_allclose(np.frombuffer(buffers[0], np.float32), np.sort(keys)[::-1][:5], rtol=1e-6)
    assert len(header["classes"][0]) == 3
    view._handle_message(view, {"type": "memories", "id": 10, "token": 4, "layer": 0, "site": "mlp"}, [])
    assert sent[-1][0]["type"] == "error" and "blocks 1..L" in sent[-1][0]["message"]


def test_relevance_overlay_sends_per_block_and_global_maps(explorer, lens):
    view = explorer.view
    view.relevance_method = "class_space"
    expected = vl.explain.relevance(lens, vl.data.shapes(1, seed=2).images[0], cls=view.cls)
    maps = np.frombuffer(view.relevance_maps, np.float32).reshape(view.relevance_rows, -1)
    assert view.relevance_rows == 4  # 3 blocks + the global map
    np.testing.assert_allclose(maps[:3], expected.per_block.reshape(3, -1), rtol=1e-5)
    np.testing.assert_allclose(maps[3], expected.map.reshape(-1), rtol=1e-5)
    view.relevance_method = "rollout"
    assert view.relevance_rows == 1
    with pytest.raises(traitlets.TraitError):
        view.relevance_method = "lime"


def test_a_class_change_computes_its_slice_once(explorer, sent, monkeypatch):
    """The view's request and the trajectories' redraw (when the trait syncs) share one computation."""
    from vitlens_widgets.widgets import explorer as explorer_module

    calls = []
    real = explorer_module.metric_slices
    monkeypatch.setattr(explorer_module, "metric_slices", lambda *a: calls.append(a[1:]) or real(*a))
    view = explorer.view
    view.site = "mlp"
    new = next(c for c in range(10) if c != view.cls)
    view._recent_slices.clear()  # forget the classes pushed ahead of time
    calls.clear()
    request = {"type": "slices", "id": 3, "site": "mlp", "metric": "identifiability", "classes": [new]}
    view._handle_message(view, request, [])
    view.cls = new
    assert [call[:3] for call in calls] == [("mlp", "identifiability", [new])]
    np.testing.assert_array_equal(view.current_slice(), real(view.trace, "mlp", "identifiability", [new])[0])


def test_identifiability_slices_use_one_rank_index_per_trace_and_site(explorer, sent):
    """Class changes read ranks from the view's rank table; the numbers are the trace's own."""
    view = explorer.view
    view.site = "attn"
    view._recent_slices.clear()
    for cls in range(view.lens.num_classes):
        view._handle_message(
            view, {"type": "slices", "id": cls, "site": "attn", "metric": "identifiability", "classes": [cls]}, []
        )
        header, buffers = sent[-1]
        got = np.frombuffer(buffers[0], dtype=np.float32).reshape(header["rows"], header["tokens"])
        np.testing.assert_array_equal(got, view.trace.identifiability(cls, "attn"))
    trace, site, index = view._rank_index
    assert trace is view.trace and site == "attn"
    ask = {"type": "slices", "id": 99, "site": "resid", "metric": "identifiability", "classes": [1]}
    view._recent_slices.clear()
    view._handle_message(view, ask, [])
    assert view._rank_index[1] == "attn"  # one class on a new site: ranked directly, no index yet
    view._handle_message(view, {**ask, "classes": [2]}, [])
    assert view._rank_index[1] == "resid" and view._rank_index[2] is not index  # one index at a time


def test_logits_table_reply_carries_every_class_and_the_log_partition(explorer, sent):
    view = explorer.view
    view._handle_message(view, {"type": "logits", "id": 11, "site": "attn", "image_index": 0}, [])
    header, buffers = sent[-1]
    assert header == {
        "type": "logits",
        "id": 11,
        "image_index": view.image_index,
        "version": view.trace_version,
        "site": "attn",
        "rows": 3,
        "tokens": 17,
        "classes": 10,
    }
    logits = np.frombuffer(buffers[0], dtype=np.float32).reshape(3, 17, 10)
    lse = np.frombuffer(buffers[1], dtype=np.float32).reshape(3, 17)
    np.testing.assert_array_equal(logits, view.trace.logits("attn"))
    np.testing.assert_allclose(np.exp(logits - lse[..., None]), view.trace.probs("attn"), rtol=1e-5, atol=1e-7)


def test_logits_table_requests_are_validated_and_size_capped(explorer, sent, monkeypatch):
    from vitlens_widgets.widgets import explorer as explorer_module

    view = explorer.view
    view._handle_message(view, {"type": "logits", "id": 12, "site": "nowhere"}, [])
    assert sent[-1][0] == {"type": "error", "id": 12, "message": "unknown site 'nowhere'"}
    monkeypatch.setattr(explorer_module, "LOGITS_TABLE_BYTES", 100)
    view._handle_message(view, {"type": "logits", "id": 13, "site": "resid"}, [])
    assert sent[-1][0]["type"] == "error" and "too much to send" in sent[-1][0]["message"]


def test_a_view_that_starts_listening_gets_the_likeliest_classes_pushed(explorer, sent):
    view = explorer.view
    view._handle_message(view, {"type": "ready"}, [])
    header, buffers = sent[-1]
    assert header["type"] == "slices" and header["id"] == -1 and header["classes"] == list(range(10))
    data = np.frombuffer(buffers[0], dtype=np.float32).reshape(10, 4, 17)
    np.testing.assert_array_equal(data, metric_slices(view.trace, view.site, view.metric, range(10)))
