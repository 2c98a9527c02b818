"""Saved traces: trace a gallery once, load it in another kernel without a forward pass."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model, random_image

import vitlens_widgets as vl
from vitlens_widgets.engine.trace import SITES


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return vl.data.shapes(3, seed=2).images


@pytest.fixture(scope="module")
def saved(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("gallery") / "gallery.vltrace"
    size = vl.Lens.demo().save_traces(images, path, progress=False)
    return path, size


def test_loaded_traces_equal_fresh_ones_and_skip_the_forward_pass(saved, images, monkeypatch):
    path, size = saved
    assert size == path.stat().st_size > 0
    lens = vl.Lens.demo()
    gallery = lens.load_traces(path)
    assert len(gallery) == 3
    monkeypatch.setattr(lens, "_run", lambda *a, **k: pytest.fail("a loaded trace ran the model"))
    loaded = [lens.trace(item) for item in gallery]
    monkeypatch.undo()
    fresh = [vl.Lens.demo().trace(image) for image in images]
    for a, b in zip(loaded, fresh):
        assert a.prediction == b.prediction
        np.testing.assert_array_equal(a.image, b.image)
        for site in SITES:
            np.testing.assert_array_equal(a.logits(site), b.logits(site))
            np.testing.assert_array_equal(a.hidden_states(site), b.hidden_states(site))


def test_pinned_traces_survive_the_cache_and_perturbations_still_run(saved):
    lens = vl.Lens(vl.Lens.demo().model, cache_size=0)
    gallery = lens.load_traces(saved[0])
    first = lens.trace(gallery[0])
    lens.clear_cache()
    assert lens.trace(gallery[0]) is first
    perturbed = lens.trace(gallery[0], attention="self_only")
    assert perturbed is not first and perturbed.options["attention"] == "self_only"


def test_explorer_opens_on_a_loaded_gallery(saved, monkeypatch):
    lens = vl.Lens.demo()
    gallery = lens.load_traces(saved[0])
    monkeypatch.setattr(lens, "_run", lambda *a, **k: pytest.fail("the explorer ran the model"))
    explorer = vl.explore(lens, gallery)
    explorer.image_index = 2
    assert explorer.trace is lens.trace(gallery[2])


def test_traces_of_another_model_are_refused(saved, tmp_path):
    other = vl.Lens(make_model("vit"))
    with pytest.raises(ValueError, match="different model"):
        other.load_traces(saved[0])
    with pytest.raises(FileNotFoundError, match="save_traces"):
        other.load_traces(tmp_path / "missing.vltrace")


def test_round_trip_for_a_family_with_prefix_tokens(tmp_path, rng):
    lens = vl.Lens(make_model("registers"))
    image = random_image(rng)
    lens.save_traces([image], tmp_path / "g.vltrace", progress=False)
    other = vl.Lens(lens.model)
    (item,) = other.load_traces(tmp_path / "g.vltrace")
    np.testing.assert_array_equal(other.trace(item).logits("attn"), lens.trace(image).logits("attn"))
    assert other.trace(image) is other.trace(item)  # the original image finds the loaded trace too


def test_forget_logits_keeps_logits_loaded_from_the_file(saved):
    lens = vl.Lens.demo()
    trace = lens.trace(lens.load_traces(saved[0])[0])
    assert trace.forget_logits() == 0 and set(trace._logits) == {"resid", "attn", "mlp"}
