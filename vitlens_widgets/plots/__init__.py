"""bqplot figures, built from the engine's arrays and the analyses' DataFrames."""

from .analysis import (
    context_removal_figure,
    identifiability_figure,
    location_gain_figure,
    memory_agreement_figure,
    model_comparison_figure,
    perturbation_figure,
    random_init_figure,
    removal_curves_figure,
    sublayer_figure,
)
from .trajectories import trajectories, trajectory_lines

__all__ = [
    "context_removal_figure",
    "identifiability_figure",
    "location_gain_figure",
    "memory_agreement_figure",
    "model_comparison_figure",
    "perturbation_figure",
    "random_init_figure",
    "removal_curves_figure",
    "sublayer_figure",
    "trajectories",
    "trajectory_lines",
]
