"""bqplot figures, built from the engine's arrays and the analyses' DataFrames."""

from .analysis import identifiability_figure, memory_agreement_figure, perturbation_figure, sublayer_figure
from .trajectories import trajectories, trajectory_lines

__all__ = [
    "identifiability_figure",
    "memory_agreement_figure",
    "perturbation_figure",
    "sublayer_figure",
    "trajectories",
    "trajectory_lines",
]
