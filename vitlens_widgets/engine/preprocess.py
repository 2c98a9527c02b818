"""Turn user images into exactly what the model sees, keeping the RGB crop for display."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torch import nn

ImageLike = Image.Image | str | os.PathLike | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Prepared:
    """One image ready for the model."""

    tensor: torch.Tensor  # float32 [3, H, W], normalised
    crop: np.ndarray  # uint8 [H, W, 3], the RGB pixels the patches come from


class Preprocessor:
    """The model's own preprocessing, from its pretrained config via timm's data config.

    Resize and crop happen on the PIL image (so ``crop`` is the exact RGB input
    the patches cover); conversion to a tensor and normalisation follow.

    Example:
        >>> prepared = Preprocessor(lens.model)("photo.jpg")  # also: lens.preprocessor, lens.prepare(...)
        >>> prepared.tensor.shape, prepared.crop.shape  # normalised [3, H, W], and the RGB pixels [H, W, 3]
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int] | None = None):
        config: dict[str, Any] = resolve_data_config(model=model)
        if input_size is not None and tuple(config["input_size"][1:]) != tuple(input_size):
            # the model was built for another resolution than its pretrained config (e.g. img_size=...)
            config["input_size"] = (config["input_size"][0], *input_size)
        self.config = config
        transform = create_transform(**config, is_training=False)
        steps = list(transform.transforms)
        split = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
        self.geometric = steps[:split]
        self.input_size: tuple[int, int] = tuple(config["input_size"][1:])
        self.mean = torch.tensor(config["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(config["std"], dtype=torch.float32).view(3, 1, 1)
        self._geometry_is_identity = self._leaves_input_size_unchanged()

    def _leaves_input_size_unchanged(self) -> bool:
        """Whether resize + crop return an image of exactly the input size untouched (e.g. crop_pct=1)."""
        probe = np.random.default_rng(0).integers(0, 256, (*self.input_size, 3), dtype=np.uint8)
        pil = Image.fromarray(probe)
        for step in self.geometric:
            pil = step(pil)
        return np.array_equal(np.asarray(pil), probe)

    def __call__(self, image: ImageLike) -> Prepared:
        if isinstance(image, torch.Tensor):
            return self._from_tensor(image)
        if self._geometry_is_identity and _is_rgb_array(image, self.input_size):
            return self._normalise(np.ascontiguousarray(image))  # fast path: nothing to resize or crop
        pil = to_pil(image)
        for step in self.geometric:
            pil = step(pil)
        crop = np.asarray(pil.convert("RGB"), dtype=np.uint8)
        if crop.shape[:2] != self.input_size:
            raise ValueError(f"preprocessing produced a {crop.shape[:2]} crop, expected {self.input_size}")
        return self._normalise(crop)

    def _normalise(self, crop: np.ndarray) -> Prepared:
        tensor = torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div_(255.0)
        return Prepared((tensor - self.mean) / self.std, crop)

    def _from_tensor(self, tensor: torch.Tensor) -> Prepared:
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(
                f"a tensor image must be an already preprocessed float [3, H, W] tensor, got shape {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"a tensor image must be floating point (normalised), got {tensor.dtype}")
        if tuple(tensor.shape[1:]) != self.input_size:
            raise ValueError(f"tensor image is {tuple(tensor.shape[1:])}, the model expects {self.input_size}")
        tensor = tensor.detach().to("cpu", torch.float32)
        rgb = (tensor * self.std + self.mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return Prepared(tensor, rgb.permute(1, 2, 0).numpy())


def to_pil(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image, a file path or an ``HxWx3`` uint8 array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        with Image.open(path) as opened:
            return opened.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"an array image must be uint8 HxWx3 (0..255), got dtype {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"an array image must be HxWx3 (or HxWx4, HxW), got shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image[..., :3]))
    raise TypeError(
        f"cannot read an image from {type(image).__name__}: pass a PIL.Image, a file path, an HxWx3 uint8 "
        "array or a preprocessed [3, H, W] float tensor"
    )


def _is_rgb_array(image: object, size: tuple[int, int]) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and tuple(image.shape[:2]) == tuple(size)
    )
