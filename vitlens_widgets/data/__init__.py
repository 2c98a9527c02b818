"""Data: labelled image folders on disk, and the demo's procedural textured shapes with exact object masks."""

from .folders import ImageFolder, image_folder
from .shapes import BACKGROUND_NAMES, CLASS_NAMES, PATTERN_NAMES, ShapesBatch, ShapesDataset, patch_fraction, shapes

__all__ = [
    "BACKGROUND_NAMES",
    "CLASS_NAMES",
    "PATTERN_NAMES",
    "ImageFolder",
    "ShapesBatch",
    "ShapesDataset",
    "image_folder",
    "patch_fraction",
    "shapes",
]
