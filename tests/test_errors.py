"""No silent wrong result: bad images, models, checkpoints, trace files and arguments get one clear error."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import vitlens_widgets as vl
from vitlens_widgets.engine import WeightsUnavailableError


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    return vl.Lens.demo()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return vl.data.shapes(1, seed=2).images[0]


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_tensor_with_nan_or_inf_is_refused(lens, image, bad):
    tensor = lens.prepare(image).tensor.clone()
    tensor[1, 5, 7] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        lens.trace(tensor)


def test_tensor_in_0_255_is_refused_with_how_to_pass_it(lens, image):
    raw = torch.from_numpy(image).permute(2, 0, 1).float()  # ToTensor without /255 and without normalising
    with pytest.raises(ValueError, match=r"not a normalised image.*uint8 HxWx3 array.*mean=\(0\.5, 0\.5, 0\.5\)"):
        lens.trace(raw)


def test_tensor_in_0_1_warns_and_a_normalised_one_does_not(lens, image):
    raw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    with pytest.warns(UserWarning, match="only values in 0..1.*normalise it"):
        lens.trace(raw)
    normalised = (raw - 0.5) / 0.25  # the demo model's own mean and std, computed here by hand
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traced = lens.trace(normalised)
    np.testing.assert_array_equal(traced.image, image)


def gradient_16bit() -> np.ndarray:
    return np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)


@pytest.mark.parametrize("kind", ["pil_I;16", "png_file", "pil_I", "uint16_array", "uint16_rgb_array"])
def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(lens, tmp_path, kind):
    values = gradient_16bit()
    expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)  # 65535 -> 255, 32768 -> 128
    source = {
        "pil_I;16": lambda: Image.fromarray(values),
        "pil_I": lambda: Image.fromarray(values.astype(np.int32)),
        "uint16_array": lambda: values,
        "uint16_rgb_array": lambda: np.repeat(values[..., None], 3, axis=-1),
    }
    if kind == "png_file":
        Image.fromarray(values).save(tmp_path / "gray16.png")
        item = str(tmp_path / "gray16.png")
    else:
        item = source[kind]()
    crop = lens.prepare(item).crop
    np.testing.assert_array_equal(crop, np.repeat(expected[..., None], 3, axis=-1))
    assert crop.mean() == pytest.approx(127.5, abs=0.5)  # a gradient, not a white image


def test_float_pil_image_is_read_as_0_to_1(lens):
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    crop = lens.prepare(Image.fromarray(values)).crop
    np.testing.assert_array_equal(crop[..., 0], np.floor(values * 255 + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match=r"mode 'F'.*0..1"):
        lens.prepare(Image.fromarray(values * 1000))


@pytest.mark.parametrize(
    "empty",
    [np.zeros((0, 0, 3), np.uint8), np.zeros((5, 0, 3), np.uint8), np.zeros((0, 7), np.uint16)],
    ids=["0x0", "5x0", "0x7_uint16"],
)
def test_empty_arrays_are_refused_before_torchvision(lens, empty):
    with pytest.raises(ValueError, match="the image is empty"):
        lens.trace(empty)


def test_empty_pil_image_is_refused(lens):
    with pytest.raises(ValueError, match=r"the image is empty \(0x0 pixels\)"):
        lens.trace(Image.new("RGB", (0, 0)))


@pytest.mark.parametrize("url", ["https://example.com/cats//cat.jpg?x=1", "http://host/a.png", "s3://bucket/k.png"])
def test_url_is_not_fetched_and_is_quoted_as_given(lens, url):
    with pytest.raises(ValueError, match="not fetched from URLs") as info:
        lens.trace(url)
    assert url in str(info.value) and "requests.get(url)" in str(info.value)


def test_a_file_that_is_not_an_image_names_its_path(lens, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match=f"cannot read {path} as an image"):
        lens.trace(str(path))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((64, 64, 3), np.float32), r"uint8 \(0..255\) or uint16"),
        (np.zeros((64, 64, 3), bool), "got dtype bool"),
        (np.zeros((2, 64, 64, 3), np.uint8), "HxWx3"),
    ],
)
def test_arrays_of_other_dtypes_or_shapes_are_refused(lens, bad, message):
    with pytest.raises(ValueError, match=message):
        lens.trace(bad)


# --- models and checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize("pool", ["", "max", "avgmax"])
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "eva02_tiny_patch14_224"])
def test_pools_that_mix_tokens_are_refused_when_the_lens_is_built(name, pool):
    model = timm.create_model(name, pretrained=False, depth=1, img_size=56, num_classes=10, global_pool=pool)
    with pytest.raises(ValueError, match=f"global_pool={pool!r}.*'token'.*'avg'"):
        vl.Lens(model)


def test_hf_hub_names_go_to_timm_and_fail_offline_with_the_usual_error():
    started = time.perf_counter()
    for pretrained in (True, False):
        with pytest.raises(WeightsUnavailableError, match="not reachable.*checkpoint_path=.*config.json"):
            vl.Lens.from_timm("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=pretrained)
    assert time.perf_counter() - started < 20


def test_hf_hub_name_is_built_by_timm_from_a_cached_config(tmp_path, monkeypatch):
    """A warm cache holding only the repository's config.json: timm builds the architecture it names."""
    from huggingface_hub import constants

    repo = tmp_path / "models--someone--tiny-shapes"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 4,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0},
        "model_args": {"depth": 1, "img_size": 32},
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    lens = vl.Lens.from_timm("hf-hub:someone/tiny-shapes", pretrained=False)
    assert (lens.num_classes, lens.depth, lens.tokens.grid) == (4, 1, (2, 2))


def test_local_dir_names_load_the_folder_offline(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=4).eval()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 4,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0},
        "model_args": {"depth": 1, "img_size": 32},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    lens = vl.Lens.from_timm(f"local-dir:{tmp_path}")
    x = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(x[None])[0].numpy()
    np.testing.assert_allclose(lens.trace(x).output_logits, expected, atol=1e-5)


def test_hub_repository_without_its_prefix_says_which_prefix():
    with pytest.raises(ValueError, match="no model called 'timm/vit_tiny_patch16_224'.*'hf-hub:timm/vit_tiny"):
        vl.Lens.from_timm("timm/vit_tiny_patch16_224", pretrained=False)


def save_tiny(path, **kwargs) -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.mark.parametrize(
    ("saved", "loaded", "message"),
    [
        (dict(img_size=32), dict(img_size=64), r"'pos_embed' is \[1, 5, 192\].*expects \[1, 17, 192\].*img_size"),
        (dict(img_size=32, num_classes=7), dict(img_size=32, num_classes=10), r"'head.bias' is \[7\].*\[10\]"),
        (
            dict(img_size=32, embed_dim=96, num_heads=3),
            dict(img_size=32),
            r"'blocks.0.attn.proj.bias' is \[96\].*expects \[192\].*model size",
        ),
    ],
    ids=["image_size", "num_classes", "width"],
)
def test_checkpoint_of_other_shapes_names_the_tensor_and_the_likely_cause(tmp_path, saved, loaded, message):
    path = tmp_path / "w.safetensors"
    save_tiny(path, **saved)
    with pytest.raises(ValueError, match=f"checkpoint {path} does not fit the model: tensor {message}"):
        vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=path, depth=1, **loaded)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_checkpoint_names_the_path_and_the_damage(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".safetensors":
        save_tiny(whole, img_size=32)
    else:
        torch.save(timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32).state_dict(), whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"checkpoint {cut} .*damaged or truncated"):
        vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=cut, depth=1, img_size=32)


# --- trace files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory, lens):
    path = tmp_path_factory.mktemp("traces") / "g.vltrace"
    lens.save_traces(vl.data.shapes(2, seed=2).images, path, progress=False)
    return path


def rewrite(source, target, edit_tensors=None, **metadata) -> None:
    """Copy a trace file with edited metadata (None removes a key) or tensors."""
    with safe_open(str(source), framework="pt") as file:
        meta = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is not iterable)
    for key, value in metadata.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(target), metadata=meta)


def more_classes(tensors):
    tensors["1.logits.mlp"] = torch.zeros(6, 65, 11)


def drop_image(tensors):
    del tensors["1.hidden.attn"]


def extra_image(tensors):
    tensors["2.input"] = tensors["0.input"].clone()


def nan_output(tensors):
    tensors["0.output"][3] = float("nan")


@pytest.mark.parametrize(
    ("edit", "metadata", "message"),
    [
        (None, dict(format="vitlens-traces/9"), r"format is 'vitlens-traces/9'"),
        (None, dict(model=None), "no model fingerprint"),
        (None, dict(count="0"), "image count is '0'"),
        (None, dict(count="-2"), "image count is '-2'"),
        (None, dict(count="two"), "image count is 'two'"),
        (None, dict(count="3"), r"holds 3 images but lacks 9 tensors \(e.g. '2.hidden.attn'\)"),
        (None, dict(count="1"), r"holds 9 tensors beyond its 1 images"),
        (more_classes, {}, r"'1.logits.mlp' is F32 \[6, 65, 11\], expected F32 \[6, 65, 10\]"),
        (drop_image, {}, r"lacks 1 tensors \(e.g. '1.hidden.attn'\)"),
        (extra_image, {}, r"beyond its 2 images \(e.g. '2.input'\)"),
        (nan_output, {}, "output of image 0 holds NaN"),
    ],
)
def test_edited_trace_file_is_not_a_valid_trace_file(lens, trace_file, tmp_path, edit, metadata, message):
    target = tmp_path / "edited.vltrace"
    rewrite(trace_file, target, edit, **metadata)
    with pytest.raises(ValueError, match=f"'{target}' is not a valid trace file: .*{message}"):
        lens.load_traces(target)


def test_truncated_trace_file_is_not_a_valid_trace_file(lens, trace_file, tmp_path):
    target = tmp_path / "cut.vltrace"
    target.write_bytes(trace_file.read_bytes()[:-100])
    with pytest.raises(ValueError, match=f"'{target}' is not a valid trace file: .*truncated"):
        lens.load_traces(target)


# --- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda lens, t, img: t.topk(k="3"), TypeError, "k must be an int, got str '3'"),
        (lambda lens, t, img: t.topk(k=2.0), TypeError, "k must be an int, got float"),
        (lambda lens, t, img: t.tokens.token_at(1.5, 0), TypeError, "row must be an int"),
        (lambda lens, t, img: lens.trace(img, attention="self_only", blocks=3), TypeError, r"blocks=\[3\]"),
        (lambda lens, t, img: lens.trace(img, attention="self_only", blocks="34"), TypeError, "got str '34'"),
        (lambda lens, t, img: lens.trace(img, drop_tokens=5), TypeError, r"drop_tokens=\[3\]"),
        (lambda lens, t, img: lens.trace(img, attention="no_cls", renormalize="yes"), TypeError, "True or False"),
        (lambda lens, t, img: lens.memory_keys(t, block=3.0), TypeError, "block must be an int"),
        (lambda lens, t, img: list(lens.iter_batches([img], batch_size="2")), TypeError, "batch_size must be an int"),
        (lambda lens, t, img: vl.Lens(lens.model, cache_size="8"), TypeError, "cache_size must be an int"),
        (lambda lens, t, img: vl.Lens(lens.model, class_names="abcdefghij"), TypeError, "not a single string"),
        (lambda lens, t, img: vl.Lens(lens.model, device="gpu"), ValueError, "'gpu' is not a torch device"),
        (lambda lens, t, img: vl.Lens.from_timm(3), TypeError, "model name must be a string"),
        (lambda lens, t, img: lens.trace_batch(None), TypeError, "iterable of images.*got NoneType"),
        (lambda lens, t, img: lens.trace_batch(img), ValueError, r"shape \(64, 64, 3\), which is one image"),
        (lambda lens, t, img: lens.save_traces(5, "x.vltrace"), TypeError, "iterable of images"),
    ],
)
def test_arguments_of_the_wrong_type_fail_clearly(lens, image, call, error, message):
    with pytest.raises(error, match=message):
        call(lens, lens.trace(image), image)


def test_a_stack_of_grayscale_images_is_still_a_batch(lens):
    stack = vl.data.shapes(2, seed=2).images.mean(axis=-1).astype(np.uint8)  # [2, 64, 64]
    assert len(lens.trace_batch(stack).predictions) == 2
