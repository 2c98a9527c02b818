"""bqplot figures, built from the engine's arrays and the analyses' DataFrames."""

from .trajectories import TrajectoryFigure

__all__ = ["TrajectoryFigure"]
