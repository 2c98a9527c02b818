"""The explorer's kernel side: traits as the programmatic interface, validation, what-if, export."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import traitlets

import vitlens_widgets as vl
from vitlens_widgets.widgets.payload import metric_slices, token_topk


@pytest.fixture
def explorer(lens) -> vl.Explorer:
    return vl.explore(lens, list(vl.data.shapes(3, seed=2).images))


def test_explorer_starts_on_the_prediction_at_the_last_layer(explorer, lens):
    trace = lens.trace(vl.data.shapes(1, seed=2).images[0])
    assert explorer.token_layout == {
        "depth": 3,
        "grid": [4, 4],
        "prefix": ["cls"],
        "n_tokens": 17,
        "names": ["cls", *(f"patch {r},{c}" for r in range(4) for c in range(4))],
        "image_size": [64, 64],
    }
    assert explorer.cls == explorer.prediction == trace.prediction.index
    assert explorer.layer == 3 and explorer.site == "resid" and explorer.metric == "identifiability"
    assert explorer.class_names == list(vl.data.CLASS_NAMES) and explorer.n_images == 3
    assert explorer.image_png.startswith(b"\x89PNG")


def test_specs_describe_sites_metrics_and_layers_once(explorer):
    sites = {s["name"]: s for s in explorer.specs["sites"]}
    assert sites["resid"]["layers"] == [0, 1, 2, 3] and sites["mlp"]["layers"] == [1, 2, 3]
    assert sites["resid"]["layer_labels"][0] == "0 · embeddings"
    assert sites["attn"]["layer_labels"][-1] == "3 / 3 · attention of block 3"
    metrics = {m["name"]: m for m in explorer.specs["metrics"]}
    assert metrics["logit"] == {"name": "logit", "label": "logit", "scale": "diverging", "range": None}
    assert metrics["identifiability"]["range"] == [0.0, 1.0]
    assert [o["name"] for o in explorer.specs["attention"]] == ["", "self_only", "no_cls"]
    assert explorer.specs["table_rows"] >= 1
    signed = {r["name"]: r.get("signed") for r in explorer.specs["relevance"] if r["name"]}
    assert signed == {"class_space": True, "rollout": False, "grad_rollout": False, "random": False}
    assert {name: s["memories"] for name, s in sites.items()} == {"resid": "mlp", "attn": "attn", "mlp": "mlp"}
    assert "palette" not in explorer.specs  # the view bundles static/palette.json itself


def test_topk_tables_round_trip_as_binary(explorer):
    indices = np.frombuffer(explorer.topk_indices, dtype=np.int16).reshape(4, 17, 5)
    probs = np.frombuffer(explorer.topk_probs, dtype=np.float32).reshape(4, 17, 5)
    expected_indices, expected_probs = token_topk(explorer.trace, "resid")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(probs, expected_probs)
    explorer.site = "mlp"
    assert len(explorer.topk_indices) == 3 * 17 * 5 * 2  # attn/mlp have no layer 0


def test_traits_move_the_view_and_accept_class_names(explorer, lens):
    explorer.cls = "star"
    assert explorer.cls == lens.class_index("star")
    explorer.layer, explorer.selected = 0, [5, 9, 5]
    assert explorer.selected == [5, 9]  # duplicates dropped, order kept
    explorer.site = "mlp"  # layer 0 does not exist there: the layer moves to the first block
    assert explorer.layer == 1


@pytest.mark.parametrize(
    ("trait", "value", "message"),
    [
        ("cls", 10, "out of range|0..9"),
        ("cls", "zebra", "zebra"),
        ("site", "x", "site must be one of"),
        ("metric", "rank", "metric must be one of"),
        ("layer", 4, "layer"),
        ("selected", [17], "out of range"),
        ("image_index", 3, r"image_index must be 0..2"),
        ("image_index", -1, r"image_index must be 0..2"),
        ("perturb_blocks", [0], "out of range 1..3"),
        ("highlight", 99, "token index"),
    ],
)
def test_invalid_state_from_python_is_rejected_with_a_reason(explorer, trait, value, message):
    with pytest.raises(traitlets.TraitError, match=message):
        setattr(explorer, trait, value)


def test_layer_is_validated_per_site(explorer):
    explorer.site = "attn"
    with pytest.raises(traitlets.TraitError, match="layer"):
        explorer.layer = 0


def test_a_bad_value_from_the_view_is_shown_and_the_view_put_back(explorer, monkeypatch):
    sent: list = []
    monkeypatch.setattr(explorer, "send_state", lambda key=None: sent.append(key))
    explorer.set_state({"layer": 99})
    assert explorer.layer == 3 and explorer.error.startswith("Not applied:") and "layer" in explorer.error
    assert ["layer"] in sent  # the view gets the valid value back
    explorer.set_state({"site": "mlp", "layer": 1})  # a site and its layer arrive together
    assert (explorer.site, explorer.layer) == ("mlp", 1) and explorer.error == ""
    explorer.set_state({"image_index": 7})
    assert explorer.image_index == 0 and "image_index" in explorer.error


def test_gallery_navigation_traces_the_next_image(explorer, lens):
    explorer.image_index = 2
    expected = lens.trace(vl.data.shapes(3, seed=2).images[2])
    assert explorer.trace is expected and explorer.prediction == expected.prediction.index
    assert explorer.service.image == 2 and explorer.service.trace is expected


def test_every_gallery_image_is_checked_when_the_explorer_is_built(lens, tmp_path):
    good = vl.data.shapes(1, seed=2).images[0]
    missing = tmp_path / "nowhere.png"
    with pytest.raises(ValueError, match=r"image 1 of the gallery cannot be shown: .*nowhere\.png"):
        vl.explore(lens, [good, missing])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="image 2 of the gallery"):
        vl.explore(lens, [good, good, corrupt])
    with pytest.raises(ValueError, match="image 0 of the gallery"):
        vl.explore(lens, [np.zeros((0, 0, 3), np.uint8)])


def test_explore_accepts_a_model_or_name_and_rejects_nonsense(lens):
    image = vl.data.shapes(1, seed=2).images[0]
    assert vl.explore(lens.model, image).n_images == 1
    with pytest.raises(TypeError, match="Lens, a timm model or a model name"):
        vl.explore(42, image)
    with pytest.raises(ValueError, match="at least one image"):
        vl.explore(lens, [])
    with pytest.raises(TypeError, match="got None"):
        vl.explore(lens, None)


def test_perturbations_retrace_and_bump_the_version(explorer, lens):
    version = explorer.trace_version
    explorer.attention = "self_only"
    explorer.perturb_blocks = [2, 3]
    assert explorer.trace_version == version + 2
    image = vl.data.shapes(1, seed=2).images[0]
    expected = lens.trace(image, attention="self_only", blocks=[2, 3])
    np.testing.assert_array_equal(explorer.trace.logits("mlp"), expected.logits("mlp"))
    assert explorer.prediction == expected.prediction.index and explorer.trace is not explorer.base_trace
    assert explorer.base_prediction == lens.trace(image).prediction.index
    assert explorer.service.version == explorer.trace_version and explorer.service.trace is explorer.trace
    assert len(lens._cache) <= 3  # what-if traces are the explorer's own, not kept in the lens's cache
    explorer.removed = [5, 3, 5]
    assert explorer.removed == [3, 5] and explorer.trace.options["drop_tokens"] == [3, 5]
    with pytest.raises(traitlets.TraitError, match="only image tokens"):
        explorer.removed = [0]


def test_removing_every_image_token_is_rejected(explorer, monkeypatch):
    with pytest.raises(traitlets.TraitError, match="at least one image token must remain"):
        explorer.removed = list(range(1, 17))
    assert explorer.removed == [] and not explorer.perturbed
    monkeypatch.setattr(explorer, "send_state", lambda key=None: None)
    explorer.set_state({"removed": [*range(1, 17), 3]})  # from the view
    assert explorer.removed == [] and explorer.error == "Not applied: at least one image token must remain"
    explorer.removed = list(range(2, 17))  # all but one is fine
    assert explorer.trace.options["drop_tokens"] == list(range(2, 17))


def test_relevance_overlay_sends_per_block_and_global_maps(explorer, lens):
    explorer.relevance_method = "class_space"
    expected = vl.explain.relevance(lens, vl.data.shapes(1, seed=2).images[0], cls=explorer.cls)
    maps = np.frombuffer(explorer.relevance_maps, np.float32).reshape(explorer.relevance_rows, -1)
    assert explorer.relevance_rows == 4  # 3 blocks + the global map
    assert explorer.relevance_blocks == [1, 2, 3]
    np.testing.assert_allclose(maps[:3], expected.per_block.reshape(3, -1), rtol=1e-5)
    np.testing.assert_allclose(maps[3], expected.map.reshape(-1), rtol=1e-5)
    explorer.relevance_method = "rollout"
    assert explorer.relevance_rows == 1 and explorer.relevance_blocks == []
    with pytest.raises(traitlets.TraitError):
        explorer.relevance_method = "lime"


def test_nothing_is_sent_before_a_view_asks(lens, monkeypatch):
    sent: list = []
    monkeypatch.setattr(vl.Explorer, "send", lambda self, content, buffers=None: sent.append(content))
    explorer = vl.explore(lens, vl.data.shapes(2, seed=2).images)
    explorer.site, explorer.metric, explorer.cls, explorer.image_index = "attn", "logit", 3, 1
    explorer.attention = "self_only"
    assert sent == []


def test_clear_cache_forgets_traces_and_derived_tables(explorer, lens):
    every_class = list(range(lens.num_classes))
    explorer.service.answer(
        {"kind": "slices", "id": 1, "image": 0, "site": "mlp", "metric": "identifiability", "classes": every_class}
    )
    assert explorer.service._rank_index is not None and len(lens._cache) > 0
    explorer.clear_cache()
    assert explorer.service._rank_index is None and len(lens._cache) == 0


def test_export_html_embeds_the_same_numbers_as_float16(lens, tmp_path):
    images = vl.data.shapes(2, seed=2).images
    path = tmp_path / "page.html"
    size = vl.export_html(lens, images, path)
    html = path.read_text()
    assert size == len(html.encode()) and 'src="data:text/javascript;base64,' in html
    payload = json.loads(
        re.search(r'<script id="vitlens-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    assert payload["complete"] and len(payload["images"]) == 2
    assert payload["specs"]["sites"][0]["name"] == "resid"
    first = payload["images"][0]
    raw = np.frombuffer(base64.b64decode(first["slices"]["mlp|logit"]), dtype=np.float16).reshape(10, 3, 17)
    expected = metric_slices(lens.trace(images[0]), "mlp", "logit", first["classes"])
    np.testing.assert_allclose(raw.astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_exported_data_escapes_everything_that_could_end_a_script(tmp_path):
    from vitlens_widgets.widgets.export import inline_json

    hostile = json.dumps({"names": ["</script><script>alert(1)</script>", "<!--<script", "a\u2028b\u2029c"]})
    inlined = inline_json(hostile)
    assert "<" not in inlined and "\u2028" not in inlined and "\u2029" not in inlined
    assert json.loads(inlined) == json.loads(hostile)


def test_trajectories_figure_for_notebooks(lens):
    trace = lens.trace(vl.data.shapes(1, seed=2).images[0])
    figure = vl.plots.trajectories(trace, "star", tokens=[5, 9], site="mlp", layer=2)
    lines = figure.marks
    assert [m.labels[0] for m in lines[:-1]] == [
        "[CLS]",
        "image tokens (mean)",
        *[trace.tokens.names[t] for t in (5, 9)],
    ]
    np.testing.assert_allclose(lines[0].y, trace.identifiability("star", "mlp")[:, 0])
    np.testing.assert_allclose(lines[1].y, trace.identifiability("star", "mlp")[:, 1:].mean(axis=1), rtol=1e-6)
    assert list(lines[-1].x) == [2, 2]  # the layer marker
    assert [m.colors[0] for m in lines[:4]] == ["#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c"]  # palette.json


def test_an_explorer_session_never_imports_the_plotting_or_dataframe_stack():
    """Opening the explorer draws a snapshot and answers memories and relevance: none of that needs
    bqplot or pandas (65 MiB and 0.7 s of a student kernel's first paint when it crept in)."""
    script = """
import sys
import vitlens_widgets as vl
lens = vl.Lens.demo()
explorer = vl.explore(lens, vl.data.shapes(2).images)
explorer._ipython_display_()
header, _ = explorer.service.answer({"kind": "memories", "id": 1, "image": 0, "site": "mlp", "layer": 2, "token": 5})
assert header["kind"] == "memories", header
explorer.relevance_method = "class_space"
assert explorer.relevance_rows > 0
print(sorted(m for m in ("bqplot", "pandas", "pyarrow") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_explorer_keeps_logits_only_for_the_site_and_image_on_screen(lens):
    images = vl.data.shapes(2, seed=2).images
    explorer = vl.explore(lens, images)
    first = explorer.base_trace
    for site in ("attn", "mlp", "resid"):
        explorer.site = site
        explorer.service.answer({"kind": "logits", "id": 1, "image": 0, "site": site, "start": 0, "stop": 1})
    assert set(first._logits) == {"resid"}  # the sites left behind were let go
    slice_before = explorer.service.answer(
        {"kind": "slices", "id": 2, "image": 0, "site": "resid", "metric": "probability", "classes": [3]}
    )[1][0].tobytes()
    explorer.image_index = 1
    assert first._logits == {} and lens.trace(images[0]) is first  # off screen: hidden states stay cached
    explorer.image_index = 0
    slice_after = explorer.service.answer(
        {"kind": "slices", "id": 3, "image": 0, "site": "resid", "metric": "probability", "classes": [3]}
    )[1][0].tobytes()
    assert slice_after == slice_before  # projected again, to the same bits
