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
from .models import over_models, random_init_lens
from .paper import (
    attention_perturbation_test,
    block_change_rate,
    identifiability_vs_random,
    residual_match_formulas,
    sublayer_gain_by_location,
)
from .perturbations import perturbation_effects
from .probe_ranking import probe_ranked_removal
from .probes import images_to_match, probe_vs_projection, ridge_fit
from .removal import context_removal
from .runner import Batch, Job, Ray, combine, iter_labelled, run
from .sublayers import sublayer_contributions

__all__ = [
    "Batch",
    "Job",
    "PerImage",
    "Ray",
    "attention_perturbation_test",
    "block_change_rate",
    "class_value_agreement",
    "combine",
    "context_removal",
    "identifiability_by_block",
    "identifiability_vs_random",
    "images_to_match",
    "iter_labelled",
    "key_value_agreement",
    "labelled_batches",
    "memory_projections",
    "object_context_test",
    "over_models",
    "per_image_identifiability",
    "perturbation_effects",
    "probe_ranked_removal",
    "probe_vs_projection",
    "random_init_lens",
    "residual_match_formulas",
    "ridge_fit",
    "run",
    "sublayer_contributions",
    "sublayer_gain_by_location",
    "token_groups",
    "top_classes_per_memory",
    "top_memories_per_class",
]
