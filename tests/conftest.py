"""Shared fixtures: small, randomly initialised timm models of every supported family."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network

import numpy as np
import pytest
import timm
import torch

import vitlens_widgets as vl

torch.set_num_threads(min(2, torch.get_num_threads()))

# family -> (timm name, kwargs). Two blocks and a small input keep each model fast.
FAMILIES: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=64)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=64)),
    "registers": ("vit_base_patch14_reg4_dinov2", dict(img_size=56, num_classes=10)),
    "avg_pool": ("vit_tiny_patch16_224", dict(img_size=64, class_token=False, global_pool="avg")),
    "layerscale": ("deit3_small_patch16_224", dict(img_size=64)),
    "eva": ("eva02_tiny_patch14_224", dict(img_size=56, num_classes=10)),
}
TOKEN_POOLED = ["vit", "registers", "layerscale"]


def make_model(family: str, seed: int = 0, depth: int = 2) -> torch.nn.Module:
    """A random-init model of ``family`` with every parameter jittered.

    The jitter makes LayerScale gammas, zero-initialised heads and biases matter,
    so a capture that skipped any of them would fail the tests.
    """
    name, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, depth=depth, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def lens() -> vl.Lens:
    """A small random ViT (3 blocks, 4x4 patches of 64x64 images) named with the shapes dataset's 10 classes."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=64, num_classes=10)
    return vl.Lens(model, class_names=list(vl.data.CLASS_NAMES))


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_image(rng: np.random.Generator, height: int = 90, width: int = 120) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def local_ray():
    """A real Ray on this machine (2 CPUs, no dashboard), started once per test session; never a remote cluster."""
    import ray
    import ray.data

    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")  # slow shared machines start the agent late
    for attempt in range(3):  # Ray gives its node 30 s to register: an overloaded machine can miss that
        try:
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                object_store_memory=256 * 1024**2,
                log_to_driver=False,
                configure_logging=False,
            )
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
