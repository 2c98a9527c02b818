"""The demo model's architecture, preprocessing and weights file."""

from __future__ import annotations

from pathlib import Path

import timm.models
import torch
from timm.models.vision_transformer import VisionTransformer

from ..data.shapes import CLASS_NAMES, IMAGE_SIZE

WEIGHTS_PATH = Path(__file__).with_name("demo_vit.safetensors")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
ARCHITECTURE = dict(
    img_size=IMAGE_SIZE,
    patch_size=8,
    embed_dim=192,
    depth=6,
    num_heads=3,
    mlp_ratio=4.0,
    num_classes=len(CLASS_NAMES),
    class_token=True,
    global_pool="token",
)
# Preprocessing the model was trained with, in timm's pretrained-config format,
# so that timm's own data config reads it back.
PRETRAINED_CFG = dict(
    architecture="vitlens_demo_vit",
    input_size=(3, IMAGE_SIZE, IMAGE_SIZE),
    crop_pct=1.0,
    crop_mode="center",
    interpolation="bicubic",
    mean=MEAN,
    std=STD,
    num_classes=len(CLASS_NAMES),
    label_names=list(CLASS_NAMES),
)


def build_demo_model(**overrides) -> VisionTransformer:
    """The demo ViT with random weights (6 blocks, 192 wide, 8x8 patches on 64x64)."""
    model = VisionTransformer(**{**ARCHITECTURE, **overrides})
    model.pretrained_cfg = dict(PRETRAINED_CFG)
    model.default_cfg = model.pretrained_cfg
    return model


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] with the demo mean and std."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


__all__ = ["ARCHITECTURE", "PRETRAINED_CFG", "WEIGHTS_PATH", "build_demo_model", "normalize", "timm"]
