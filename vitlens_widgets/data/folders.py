"""Labelled images on disk: one subfolder per class, with optional segmentation masks mirroring them."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.transforms import InterpolationMode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SYNSET = re.compile(r"n\d{8}")
IGNORE_ID = 1000  # ImageNet-S marks pixels it could not label with 1000


@dataclass(frozen=True)
class ImageFolder:
    """Labelled image files found by :func:`image_folder`; read lazily, one image at a time.

    ``files`` holds ``(image path, class index, mask path or None)`` in a fixed order
    (class folders, then file names, sorted). Every dataset analysis accepts it as
    ``data``: masks then go through their image's resize and crop (see :func:`crop_mask`).

    Example:
        >>> folder = vl.data.image_folder("val", masks="val_masks", classes=lens.class_names)
        >>> len(folder), folder.files[0]
    """

    root: Path
    files: tuple[tuple[str, int, str | None], ...]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def has_masks(self) -> bool:
        """Whether every image has a mask.

        Example:
            >>> vl.data.image_folder("val", masks="val_masks").has_masks
            True
        """
        return bool(self.files) and self.files[0][2] is not None

    def __iter__(self) -> Iterator[tuple[Image.Image, int, np.ndarray | None]]:
        """``(image, label, mask)`` with masks at the image's own size (analyses crop them for the model)."""
        for path, label, mask_path in self.files:
            yield _open_rgb(path), label, None if mask_path is None else read_mask(mask_path)

    def labelled_items(self, preprocessor: Any) -> Iterator[tuple[Image.Image, int, np.ndarray | None]]:
        """``(image, label, mask)`` with each mask resized and cropped like its image by ``preprocessor``.

        Example:
            >>> image, label, mask = next(folder.labelled_items(lens.preprocessor))  # mask: bool [H, W] of the crop
        """
        for path, label, mask_path in self.files:
            yield load_labelled(preprocessor, path, mask_path, label)


def image_folder(
    root: str | os.PathLike,
    masks: str | os.PathLike | None = None,
    classes: Mapping[str, int] | Sequence[str] | None = None,
) -> ImageFolder:
    """Labelled images in ``root/<class>/<image>`` (torchvision's ``ImageFolder`` layout), streamed lazily.

    ``classes`` says which class index each folder is: a mapping ``folder -> index``,
    or the model's class names (``lens.class_names``: folders named after classes).
    Folders named by ImageNet synset id (``n01440764``) map to ImageNet-1k indices
    on their own (timm's ImageNet info), and so do folders named by number.
    ``masks`` is a folder tree mirroring ``root`` with one PNG per image
    (``masks/<class>/<image stem>.png``; the ImageNet-S layout): binary, or a class
    id per pixel (``R + 256 G`` for RGB PNGs); every non-zero pixel except
    ImageNet-S's ignore value 1000 counts as object. A mask must have its image's
    size: analyses resize and crop it exactly like the image (nearest neighbour).

    Example:
        >>> folder = vl.data.image_folder("imagenet/val", masks="imagenet-s/val_masks")
        >>> vl.analysis.object_context_test(vl.Lens.from_timm("vit_base_patch16_224"), folder)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    by_class = {d.name: _images_in(d) for d in sorted(root.iterdir()) if d.is_dir()}
    by_class = {name: images for name, images in by_class.items() if images}
    if not by_class:
        raise ValueError(
            f"no images in {root}: expected one subfolder per class holding image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    index = class_indices(list(by_class), classes)
    mask_root = None if masks is None else Path(masks)
    if mask_root is not None and not mask_root.is_dir():
        raise FileNotFoundError(f"no mask folder at {mask_root}")
    files, missing = [], []
    for name, images in by_class.items():
        for image in images:
            mask = None if mask_root is None else mask_root / name / f"{image.stem}.png"
            if mask is not None and not mask.is_file():
                missing.append(str(mask))
            files.append((str(image), index[name], None if mask is None else str(mask)))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(files)} images have no mask (e.g. {', '.join(missing[:3])}); "
            "masks must mirror the image tree as <masks>/<class>/<image stem>.png"
        )
    return ImageFolder(root, tuple(files))


def class_indices(folders: list[str], classes: Mapping[str, int] | Sequence[str] | None) -> dict[str, int]:
    """The class index of each folder name (see :func:`image_folder`); ``ValueError`` naming unknown folders.

    Example:
        >>> class_indices(["n01440764", "n01443537"], None)
        {'n01440764': 0, 'n01443537': 1}
    """
    if isinstance(classes, Mapping):
        known = {str(k): int(v) for k, v in classes.items()}
    elif classes is not None:
        known = {str(name): i for i, name in enumerate(classes)}
    else:
        known = {}
    out, unknown = {}, []
    for folder in folders:
        if folder in known:
            out[folder] = known[folder]
        elif SYNSET.fullmatch(folder) and folder in _imagenet_synsets():
            out[folder] = _imagenet_synsets()[folder]
        elif folder.isdigit():
            out[folder] = int(folder)
        else:
            unknown.append(folder)
    if unknown:
        hints = [
            f"{u!r} (did you mean {', '.join(map(repr, close))}?)" for u in unknown[:5] if (close := _close(u, known))
        ]
        raise ValueError(
            f"unknown class folder(s): {', '.join(map(repr, unknown[:10]))}. "
            + (f"Closest class names: {'; '.join(hints)}. " if hints else "")
            + "Name folders after the model's classes and pass classes=lens.class_names, pass a dict "
            "{folder: class index}, or use ImageNet synset ids (n01440764) or class numbers as folder names."
        )
    return out


def load_labelled(
    preprocessor: Any, path: str, mask_path: str | None, label: int
) -> tuple[Image.Image, int, np.ndarray | None]:
    """One image file and its mask, the mask resized and cropped like the image (``ValueError`` if mis-sized).

    Example:
        >>> image, label, mask = load_labelled(lens.preprocessor, "val/star/0.png", "masks/star/0.png", 3)
    """
    image = _open_rgb(path)
    if mask_path is None:
        return image, label, None
    mask = read_mask(mask_path)
    if mask.shape != (image.height, image.width):
        raise ValueError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {path} is "
            f"{image.width}x{image.height}: a mask must have its image's size"
        )
    return image, label, crop_mask(preprocessor, mask)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """bool ``[H, W]``: the object pixels of a PNG mask (binary, palette, or class ids ``R + 256 G``).

    Example:
        >>> read_mask("val_masks/n01440764/ILSVRC2012_val_00000293.png").mean()  # object share
    """
    with Image.open(path) as opened:
        pixels = np.asarray(opened)
    ids = pixels[..., 0].astype(np.int32) + 256 * pixels[..., 1] if pixels.ndim == 3 else pixels.astype(np.int32)
    return (ids != 0) & (ids != IGNORE_ID)


def crop_mask(preprocessor: Any, mask: np.ndarray) -> np.ndarray:
    """A pixel mask of the original image taken through the preprocessor's resize and crop, nearest neighbour.

    Returns bool ``[H, W]`` covering the model's input crop, aligned with ``lens.prepare(image).crop``.

    Example:
        >>> crop_mask(lens.preprocessor, np.ones((375, 500), bool)).shape
        (224, 224)
    """
    pil = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    for step in preprocessor.geometric:
        if hasattr(step, "interpolation"):
            step = copy.copy(step)
            step.interpolation = InterpolationMode.NEAREST
        pil = step(pil)
    return np.asarray(pil) > 127


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _close(name: str, known: Mapping[str, int]) -> list[str]:
    return difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)


_SYNSETS: dict[str, int] = {}


def _imagenet_synsets() -> dict[str, int]:
    if not _SYNSETS:
        from timm.data import ImageNetInfo

        _SYNSETS.update({s: i for i, s in enumerate(ImageNetInfo("imagenet-1k").label_names())})
    return _SYNSETS
