"""Turn user images into exactly what the model sees, keeping the RGB crop for display."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torch import nn

ImageLike = Image.Image | str | os.PathLike | np.ndarray | torch.Tensor
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# How far outside 0..1 a tensor's pixels (un-normalised with the model's mean and std) may lie before the tensor is
# refused: far enough for resampling overshoot and for torch.randn noise, which tests and benchmarks feed in; a 0..255
# tensor lands around 0..60 (std 0.25), so anything but a nearly black one is caught.
NORMALISED_SLACK = 7.0


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
        if not torch.isfinite(tensor).all():
            raise ValueError("the tensor image holds NaN or infinite values")
        pixels = tensor * self.std + self.mean  # what the model sees, back in 0..1
        self._check_normalised(tensor, pixels)
        rgb = pixels.clamp(0, 1).mul(255).round().to(torch.uint8)
        return Prepared(tensor, rgb.permute(1, 2, 0).numpy())

    def _check_normalised(self, tensor: torch.Tensor, pixels: torch.Tensor) -> None:
        """Refuse tensors no normalised image can be; warn about ones that look like 0..1 images."""
        how = (
            "Pass the image itself (a uint8 HxWx3 array, a PIL image or a file path) and the lens preprocesses it, "
            f"or normalise it with the model's own mean={_rounded(self.mean)} and std={_rounded(self.std)}: "
            "(x - lens.preprocessor.mean) / lens.preprocessor.std, with x in 0..1."
        )
        low, high = float(pixels.min()), float(pixels.max())
        if low < -NORMALISED_SLACK or high > 1 + NORMALISED_SLACK:
            raise ValueError(
                f"this tensor is not a normalised image: un-normalised with the model's mean and std its pixels "
                f"span {low:.3g}..{high:.3g}, far outside 0..1 (a 0..255 tensor, or another normalisation?). {how}"
            )
        t_low, t_high = float(tensor.min()), float(tensor.max())
        if t_low >= 0 and t_high <= 1 and t_high - t_low >= 0.5:
            warnings.warn(
                f"this tensor holds only values in 0..1 ({t_low:.3g}..{t_high:.3g}), like an image that was not "
                f"normalised; it is read as normalised. {how}",
                UserWarning,
                stacklevel=4,
            )


def to_pil(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image, a file path or an ``HxWx3`` uint8 (or uint16) array.

    Images with more than 8 bits per channel are scaled to 8 bits, not clipped
    (see :func:`to_8bit`); empty images and URLs raise ``ValueError``.
    """
    if isinstance(image, Image.Image):
        return _checked_size(to_8bit(image).convert("RGB"))
    if isinstance(image, (str, os.PathLike)):
        return _checked_size(to_8bit(_open(image)).convert("RGB"))
    if isinstance(image, np.ndarray):
        return _checked_size(Image.fromarray(_array_to_uint8(image)))
    raise TypeError(
        f"cannot read an image from {type(image).__name__}: pass a PIL.Image, a file path, an HxWx3 uint8 "
        "array or a preprocessed [3, H, W] float tensor"
    )


def _open(source: str | os.PathLike) -> Image.Image:
    text = os.fspath(source)
    if isinstance(text, str) and URL_SCHEME.match(text):
        raise ValueError(
            f"images are not fetched from URLs ({text}). Download the file and pass its path, or open it "
            "yourself: PIL.Image.open(io.BytesIO(requests.get(url).content))"
        )
    if not Path(text).is_file():
        raise FileNotFoundError(f"no image file at {text}")
    try:
        with Image.open(text) as opened:
            opened.load()
            return opened.copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:  # unidentified, truncated, broken, huge
        raise ValueError(f"cannot read {text} as an image: {err}") from err


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8 bits per channel: 16-bit modes scaled (``v / 257``), float mode ``F`` read as 0..1.

    PIL's own ``convert`` clips 16-bit values at 255 (a white image); here
    ``I;16*`` and ``I`` (16-bit grayscale, e.g. PNG) map 0..65535 onto 0..255.

    Example:
        >>> to_8bit(Image.fromarray(np.full((2, 2), 65535, np.uint16))).getpixel((0, 0))
        255
    """
    if image.mode.startswith("I"):
        return Image.fromarray(_uint16_to_uint8(np.asarray(image), f"a mode {image.mode!r} image"))
    if image.mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all() or (values.size and (values.min() < 0 or values.max() > 1)):
            raise ValueError(
                "a float (mode 'F') image must hold finite values in 0..1; scale it, or convert it to 8 bits"
            )
        return Image.fromarray(np.round(values * 255).astype(np.uint8))
    return image


def _uint16_to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"{what} is read as 16-bit (0..65535) but holds values {values.min()}..{values.max()}")
    return np.round(values.astype(np.float32) / 257).astype(np.uint8)


def _array_to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"an array image must be uint8 (0..255) or uint16 (0..65535), got dtype {image.dtype}. "
            "For a float image in 0..1, pass (x * 255).round().astype(np.uint8)"
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"an array image must be HxWx3 (or HxWx4, HxW), got shape {image.shape}")
    if image.dtype == np.uint16:
        image = _uint16_to_uint8(image, "a uint16 array")
    return np.ascontiguousarray(image[..., :3])


def _checked_size(image: Image.Image) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise ValueError(f"the image is empty ({image.width}x{image.height} pixels)")
    return image


def _rounded(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in values.flatten())


def _is_rgb_array(image: object, size: tuple[int, int]) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and tuple(image.shape[:2]) == tuple(size)
    )
