"""The kernel-side engine: one forward pass, every block and token, read in class embedding space."""

from .adapters import SUPPORTED, ModelAdapter, adapter_for
from .classes import ClassNames
from .lens import Lens
from .loading import WeightsUnavailableError, load_state_dict
from .preprocess import Preprocessor
from .trace import SITES, Prediction, RankIndex, TokenLayout, TopK, Trace, TraceBatch, layer_row

__all__ = [
    "SITES",
    "SUPPORTED",
    "ClassNames",
    "Lens",
    "ModelAdapter",
    "Prediction",
    "Preprocessor",
    "RankIndex",
    "TokenLayout",
    "TopK",
    "Trace",
    "TraceBatch",
    "WeightsUnavailableError",
    "adapter_for",
    "layer_row",
    "load_state_dict",
]
