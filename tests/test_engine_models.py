"""Which models the lens accepts, and how it loads weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch
from conftest import make_model, random_image
from safetensors.torch import save_file

import vitlens_widgets as vl
from vitlens_widgets.engine import WeightsUnavailableError, load_state_dict


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet18", {}, "ResNet is not a supported vision transformer"),
        ("vit_tiny_patch16_224", {"num_classes": 0, "depth": 1}, "no linear classifier head"),
        ("vit_tiny_patch16_224", {"global_pool": "map", "depth": 1}, "attention-pool head"),
        ("beit_base_patch16_224", {"depth": 1}, "Beit is not a supported"),
    ],
)
def test_unsupported_models_get_a_clear_value_error(name, kwargs, message):
    model = timm.create_model(name, pretrained=False, **kwargs)
    with pytest.raises(ValueError, match=message) as info:
        vl.Lens(model)
    assert "Supported" in str(info.value) or "num_classes" in str(info.value) or "average pooling" in str(info.value)


def test_non_module_is_rejected():
    with pytest.raises(TypeError, match="nn.Module"):
        vl.Lens("vit_tiny_patch16_224")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_from_timm_loads_a_local_checkpoint_offline(tmp_path, rng, suffix):
    source = make_model("vit")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    lens = vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=path, depth=2, img_size=64)
    image = random_image(rng)
    with torch.no_grad():
        expected = source(lens.prepare(image).tensor[None])[0].numpy()
    np.testing.assert_allclose(lens.trace(image).output_logits, expected, atol=1e-5)


def test_checkpoint_head_size_sets_num_classes(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=7)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    lens = vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=path, depth=1, img_size=32)
    assert lens.num_classes == 7 and lens.class_names[6] == "class 6"


class Payload:
    """Stands for an arbitrary pickled object that must never be instantiated."""


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_state_dict(path)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"head.weight": torch.zeros(10, 192), "bogus": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="does not match the architecture.*unexpected"):
        vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path=path, depth=1, img_size=32)


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        vl.Lens.from_timm("vit_tiny_patch16_224", checkpoint_path="/no/such/weights.safetensors")


def test_offline_hub_loading_fails_fast_with_instructions():
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path=") as info:
        vl.Lens.from_timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert time.perf_counter() - started < 20  # no minute of retries (generous: shared CI machines)
    assert "Lens.demo()" in str(info.value)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match="no model called 'vit_tiny_patch16_244'.*vit_tiny_patch16_224"):
        vl.Lens.from_timm("vit_tiny_patch16_244", pretrained=False)


def test_random_init_from_timm_and_repr():
    lens = vl.Lens.from_timm("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32)
    assert "blocks=1" in repr(lens) and "2x2 patches" in repr(lens)
