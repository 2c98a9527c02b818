"""Demo data: procedural textured shapes with exact object masks."""

from .shapes import BACKGROUND_NAMES, CLASS_NAMES, PATTERN_NAMES, ShapesBatch, ShapesDataset, patch_fraction, shapes

__all__ = [
    "BACKGROUND_NAMES",
    "CLASS_NAMES",
    "PATTERN_NAMES",
    "ShapesBatch",
    "ShapesDataset",
    "patch_fraction",
    "shapes",
]
