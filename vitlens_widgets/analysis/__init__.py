"""Dataset-level analyses: pure functions over a lens and data, returning tidy DataFrames."""

from .identifiability import (
    PerImage,
    identifiability_by_block,
    labelled_batches,
    object_context_test,
    per_image_identifiability,
    token_groups,
)
from .memories import (
    class_value_agreement,
    key_value_agreement,
    memory_projections,
    top_classes_per_memory,
    top_memories_per_class,
)
from .perturbations import perturbation_effects
from .probes import images_to_match, probe_vs_projection, ridge_fit
from .runner import Batch, Job, Ray, combine, iter_labelled, run
from .sublayers import sublayer_contributions

__all__ = [
    "Batch",
    "Job",
    "PerImage",
    "Ray",
    "class_value_agreement",
    "combine",
    "identifiability_by_block",
    "images_to_match",
    "iter_labelled",
    "key_value_agreement",
    "labelled_batches",
    "memory_projections",
    "object_context_test",
    "per_image_identifiability",
    "perturbation_effects",
    "probe_vs_projection",
    "ridge_fit",
    "run",
    "sublayer_contributions",
    "token_groups",
    "top_classes_per_memory",
    "top_memories_per_class",
]
