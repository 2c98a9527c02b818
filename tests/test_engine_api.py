"""The engine's public surface: inputs, errors, classes, top-k, caching and batches."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import make_model, random_image
from PIL import Image
from timm.data import create_transform

import vitlens_widgets as vl
from vitlens_widgets.engine.classes import ClassNames
from vitlens_widgets.engine.trace import rank_of


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    return vl.Lens(make_model("vit"))


def test_rank_counts_only_strictly_greater_logits():
    logits = np.array([[3.0, 1.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    assert rank_of(logits, 0).tolist() == [0]  # tied at the top: nobody is strictly greater
    assert rank_of(logits, 2).tolist() == [0]
    assert rank_of(logits, 3).tolist() == [3]
    assert rank_of(logits, 1).tolist() == [4]


def test_identifiability_is_one_minus_rank_over_classes(lens, rng):
    trace = lens.trace(random_image(rng))
    rank = trace.rank(7, "mlp")
    np.testing.assert_allclose(trace.identifiability(7, "mlp"), 1 - rank / lens.num_classes, rtol=1e-6)
    top = trace.topk(k=1, site="mlp", layer=1).indices[:, 0]
    assert np.all(trace.identifiability(top[0], "mlp")[0, 0] == 1.0)


def test_classes_resolve_by_name_synonym_and_index(lens, rng):
    trace = lens.trace(random_image(rng))
    assert lens.class_names[0].startswith("tench")
    assert lens.class_index("tench") == lens.class_index("Tinca tinca") == lens.class_index(0) == 0
    np.testing.assert_array_equal(trace.rank("tench", "resid"), trace.rank(0, "resid"))


def test_unknown_class_name_suggests_close_matches(lens):
    with pytest.raises(ValueError, match="unknown class 'golden retriver'.*golden retriever"):
        lens.class_index("golden retriver")
    with pytest.raises(ValueError, match="out of range"):
        lens.class_index(1000)


def test_topk_matches_a_full_sort(lens, rng):
    trace = lens.trace(random_image(rng))
    top = trace.topk(k=5, site="attn", layer=2)
    logits = trace.logits("attn")[1]
    expected = np.argsort(-logits, axis=-1)[:, :5]
    np.testing.assert_array_equal(top.indices, expected)
    np.testing.assert_allclose(top.logits, np.take_along_axis(logits, expected, -1))
    probs = trace.probs("attn")[1]
    np.testing.assert_allclose(top.probs, np.take_along_axis(probs, expected, -1), rtol=1e-5)
    assert top.names[0][0] == lens.class_names[expected[0, 0]]
    assert trace.topk(k=3).indices.shape == (lens.depth + 1, lens.tokens.n_tokens, 3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.topk(site="attn", layer=0), "layer 0 is out of range for site 'attn'"),
        (lambda t: t.topk(site="resid", layer=3), "valid layers are 0..2"),
        (lambda t: t.logits("residual"), "unknown site 'residual'"),
        (lambda t: t.topk(k=0), "k must be between 1 and 1000"),
        (lambda t: t.tokens.check_token(17), "token 17 is out of range"),
        (lambda t: t.tokens.patch_position(0), "prefix token 'cls'"),
    ],
)
def test_out_of_range_queries_fail_clearly(lens, rng, call, message):
    trace = lens.trace(random_image(rng))
    with pytest.raises(ValueError, match=message):
        call(trace)


def test_token_layout_names_kinds_and_positions(lens):
    tokens = lens.tokens
    assert tokens.grid == (4, 4) and tokens.n_tokens == 17 and tokens.patch_size == (16, 16)
    assert tokens.kinds[0] == "cls" and set(tokens.kinds[1:]) == {"patch"}
    assert tokens.names[1] == "patch 0,0" and tokens.names[-1] == "patch 3,3"
    assert tokens.patch_position(6) == (1, 1) and tokens.token_at(1, 1) == 6


def test_preprocessing_is_the_models_own_timm_transform(rng):
    model = make_model("vit")
    lens = vl.Lens(model)
    pil = Image.fromarray(random_image(rng, 100, 150))
    config = dict(lens.preprocessor.config)
    assert config["input_size"] == (3, 64, 64) and config["crop_pct"] == pytest.approx(0.9)
    expected = create_transform(**config)(pil)
    prepared = lens.prepare(pil)
    torch.testing.assert_close(prepared.tensor, expected, atol=1e-6, rtol=0)
    resize_and_crop = create_transform(**config).transforms[:2]
    crop = pil
    for step in resize_and_crop:
        crop = step(crop)
    np.testing.assert_array_equal(lens.trace(pil).image, np.asarray(crop))


def test_file_path_array_pil_and_tensor_inputs_give_the_same_trace(lens, rng, tmp_path):
    array = random_image(rng, 64, 64)
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    lens.clear_cache()
    traces = [lens.trace(array), lens.trace(str(path)), lens.trace(Image.fromarray(array))]
    traces.append(lens.trace(lens.prepare(array).tensor))
    for other in traces[1:]:
        np.testing.assert_array_equal(other.logits("resid"), traces[0].logits("resid"))
        np.testing.assert_array_equal(other.image, traces[0].image)
    assert traces[0].image.shape == (64, 64, 3) and traces[0].image.dtype == np.uint8


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((64, 64, 3), np.float32), ValueError, "must be uint8"),
        (np.zeros((64, 64, 5), np.uint8), ValueError, "HxWx3"),
        (torch.zeros(64, 64, 3), ValueError, r"\[3, H, W\]"),
        (torch.zeros(3, 32, 32), ValueError, "expects"),
        (torch.zeros(3, 64, 64, dtype=torch.uint8), ValueError, "floating point"),
        ("/no/such/file.png", FileNotFoundError, "no image file"),
        (42, TypeError, "cannot read an image"),
    ],
)
def test_bad_images_fail_clearly_and_leave_no_state(lens, image, error, message):
    lens.clear_cache()
    with pytest.raises(error, match=message):
        lens.trace(image)
    assert len(lens._cache) == 0


def test_same_image_is_served_from_the_cache_without_a_forward_pass(rng):
    model = make_model("vit")
    lens = vl.Lens(model, cache_size=2)
    calls = []
    model.patch_embed.register_forward_hook(lambda *a: calls.append(1))
    images = [random_image(rng) for _ in range(3)]
    first = lens.trace(images[0])
    assert lens.trace(images[0].copy()) is first and len(calls) == 1
    lens.trace(images[1])
    lens.trace(images[2])  # evicts images[0]
    assert len(calls) == 3
    assert lens.trace(images[0]) is not first and len(calls) == 4


def test_batches_agree_with_single_traces(rng):
    lens = vl.Lens(make_model("deit_distilled"))
    images = [random_image(rng) for _ in range(5)]
    batch = lens.trace_batch(images)
    assert len(batch) == 5
    logits = batch.logits("attn")
    assert logits.shape == (5, lens.depth, lens.tokens.n_tokens, lens.num_classes)
    labels = [3, 1, 4, 1, 5]
    ident = batch.identifiability(labels, "attn")
    for i, image in enumerate(images):
        single = lens.trace(image)
        np.testing.assert_allclose(logits[i], single.logits("attn"), atol=1e-4)
        np.testing.assert_array_equal(batch[i].logits("attn"), logits[i])  # traces share the batch's projection
        np.testing.assert_array_equal(ident[i], batch[i].identifiability(labels[i], "attn"))
    assert batch.predictions.tolist() == [lens.trace(im).prediction.index for im in images]


def test_iter_traces_streams_a_dataset_lazily_in_batches(rng):
    lens = vl.Lens(make_model("vit"))
    consumed = []

    def dataset():
        for i in range(7):
            consumed.append(i)
            yield random_image(rng), i  # (image, label) items are fine

    stream = lens.iter_batches(dataset(), batch_size=3, progress=False)
    first = next(stream)
    assert len(first) == 3 and len(consumed) == 3  # memory stays bounded by the batch size
    sizes = [len(first)] + [len(b) for b in stream]
    assert sizes == [3, 3, 1]
    assert len(list(lens.iter_traces([random_image(rng) for _ in range(4)], batch_size=3, progress=False))) == 4


def test_vit_base_trace_fully_projected_stays_under_64_mb(rng):
    torch.manual_seed(0)
    lens = vl.Lens(timm.create_model("vit_base_patch16_224", pretrained=False))
    trace = lens.trace(random_image(rng, 224, 224))
    for site in ("resid", "attn", "mlp"):
        trace.logits(site)
    assert trace.logits("resid").shape == (13, 197, 1000)
    assert trace.nbytes < 64 * 2**20, f"{trace.nbytes / 2**20:.1f} MiB"


def test_cuda_request_without_cuda_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        vl.Lens(make_model("vit"), device="cuda")


def test_class_names_must_match_the_head():
    with pytest.raises(ValueError, match="got 3 class names for a model with 1000 classes"):
        vl.Lens(make_model("vit"), class_names=["a", "b", "c"])
    names = ClassNames([f"thing {i}" for i in range(10)])
    assert names.index("THING 3") == 3 and names.short(2) == "thing 2"


def test_arrays_at_input_size_skip_pil_only_when_geometry_is_identity(rng):
    import vitlens_widgets.engine.preprocess as preprocess

    demo_like = vl.Lens(make_model("vit"))  # crop_pct 0.9: resize is not the identity
    assert not demo_like.preprocessor._geometry_is_identity
    model = make_model("vit")
    model.pretrained_cfg = {**model.pretrained_cfg, "crop_pct": 1.0}
    lens = vl.Lens(model)
    assert lens.preprocessor._geometry_is_identity
    image = random_image(rng, 64, 64)
    fast = lens.prepare(image)
    slow = lens.prepare(preprocess.Image.fromarray(image))  # PIL path
    torch.testing.assert_close(fast.tensor, slow.tensor)
    np.testing.assert_array_equal(fast.crop, slow.crop)


def test_class_probs_equal_the_full_softmax_also_with_removed_tokens(lens, rng):
    image = random_image(rng)
    for trace in (lens.trace(image), lens.trace(image, drop_tokens=[2, 5])):
        for site in vl.SITES:
            expected = np.moveaxis(trace.probs(site)[..., [3, 0, 7]], -1, 0)
            got = trace.class_probs([3, 0, 7], site)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)
            assert np.isnan(got).any() == bool(trace.options)  # removed tokens have no probability


@pytest.mark.parametrize("family", ["vit", "deit_distilled"])
def test_batch_rank_without_cached_logits_counts_the_same_and_keeps_no_logits(rng, family):
    lens = vl.Lens(make_model(family), cache_size=0)
    images = [random_image(rng) for _ in range(3)]
    labels = [2, 0, 7]
    batch = lens.trace_batch(images, drop_tokens=[lens.tokens.n_prefix + 1])
    streamed = batch.rank(labels, "mlp")
    assert "mlp" not in batch._logits and all("mlp" not in t._logits for t in batch)  # nothing [.., C] kept
    expected = rank_of(batch.logits("mlp"), np.array(labels))  # from the full logits, now kept
    expected[:, :, lens.tokens.n_prefix + 1] = -1
    np.testing.assert_array_equal(streamed, expected)
    assert (streamed[:, :, lens.tokens.n_prefix + 1] == -1).all() and streamed.max() > 0
    per_trace = np.stack([t.identifiability(c, "mlp") for t, c in zip(batch, labels)])
    fresh = lens.trace_batch(images, drop_tokens=[lens.tokens.n_prefix + 1])
    np.testing.assert_array_equal(fresh.identifiability(labels, "mlp"), per_trace)  # NaN where dropped, on both sides


def test_projection_in_chunks_matches_one_readout(lens, rng):
    from vitlens_widgets.engine.trace import project

    hidden = lens.trace(random_image(rng)).hidden["resid"]
    whole = project(lens.adapter.readout, hidden, chunk_rows=hidden[..., 0].numel())
    np.testing.assert_allclose(project(lens.adapter.readout, hidden, chunk_rows=7), whole, rtol=1e-5, atol=1e-6)


def test_rank_index_counts_like_rank_of_with_ties_and_removed_tokens(rng):
    model = make_model("vit")
    with torch.no_grad():
        model.head.weight[4:8] = model.head.weight[0]  # classes 0, 4..7 tie on every token
        model.head.bias[4:8] = model.head.bias[0]
    lens = vl.Lens(model)
    trace = lens.trace(random_image(rng), drop_tokens=[lens.tokens.n_prefix])
    index = trace.rank_index("attn")
    for cls in range(lens.num_classes):
        np.testing.assert_array_equal(index.rank(cls), trace.rank(cls, "attn"))
        np.testing.assert_array_equal(index.identifiability(cls), trace.identifiability(cls, "attn"))
    assert (index.rank(5) == index.rank(0)).all() and index.rank(0).max() > 0


def test_forget_logits_lets_go_of_projections_and_projects_the_same_bits_again(lens, rng):
    trace = vl.Lens(make_model("vit")).trace(random_image(rng))
    before = {site: trace.logits(site).copy() for site in ("resid", "attn", "mlp")}
    log_partition = trace.log_partition("mlp").nbytes
    held = trace.nbytes
    freed = trace.forget_logits(keep=["resid"])
    assert freed == before["attn"].nbytes + before["mlp"].nbytes
    assert trace.nbytes == held - freed - log_partition
    assert "resid" in trace._logits and "mlp" not in trace._logits and "mlp" not in trace._log_partition
    for site, logits in before.items():
        assert np.array_equal(trace.logits(site), logits)  # same bits, projected again
    with pytest.raises(ValueError, match="site"):
        trace.forget_logits(keep=["residual"])


def test_forget_logits_keeps_logits_shared_with_a_batch(rng):
    lens = vl.Lens(make_model("vit"))
    batch = lens.trace_batch([random_image(rng) for _ in range(2)])
    batch.logits("resid")
    first = batch[0]
    assert first.forget_logits() == 0 and "resid" in first._logits  # a view of the batch's array: nothing to free


def test_topk_probabilities_are_exactly_the_probability_metric(lens, rng):
    """The explorer's hover panel (top-k) and its grid (probability metric) show the same number."""
    own, image = vl.Lens(make_model("vit")), random_image(rng)
    trace = own.trace(image)
    top = trace.topk(k=3, site="attn")
    last = trace.depth - 1  # the attention row of the last block
    best = top.indices[last, 5, 0]
    assert top.probs[last, 5, 0] == trace.class_probs([best], "attn")[0, last, 5]
    fresh = own.trace(image, cache=False)  # one layer alone, no cached log-partition
    at_layer = fresh.topk(k=3, site="attn", layer=trace.depth)
    assert np.array_equal(at_layer.probs, top.probs[last]) and np.array_equal(at_layer.indices, top.indices[last])
    assert (top.probs.sum(-1) <= 1 + 1e-6).all()


def test_log_partition_of_some_rows_equals_the_whole_sites_and_caches_nothing(rng):
    trace = vl.Lens(make_model("vit")).trace(random_image(rng))
    alone = trace.log_partition("attn", rows=slice(1, 2))  # computed for that row only
    assert "attn" not in trace._log_partition
    whole = trace.log_partition("attn")
    assert np.array_equal(alone, whole[1:2]) and np.array_equal(trace.log_partition("attn", rows=0), whole[0])
