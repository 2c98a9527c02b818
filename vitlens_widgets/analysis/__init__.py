"""Dataset-level analyses: pure functions over a lens and data, returning tidy DataFrames."""

from .identifiability import (
    identifiability_by_block,
    iter_labelled,
    labelled_batches,
    object_context_test,
    per_image_identifiability,
    token_groups,
)
from .perturbations import perturbation_effects
from .sublayers import sublayer_contributions

__all__ = [
    "identifiability_by_block",
    "iter_labelled",
    "labelled_batches",
    "object_context_test",
    "per_image_identifiability",
    "perturbation_effects",
    "sublayer_contributions",
    "token_groups",
]
