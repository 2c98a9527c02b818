"""vitlens-widgets: look inside Vision Transformers in class embedding space, in Jupyter.

Example:
    >>> import vitlens_widgets as vl
    >>> lens = vl.Lens.demo()
    >>> trace = lens.trace(vl.data.shapes(1).images[0])
    >>> trace.identifiability(trace.prediction.index, "resid")  # [L+1, T]
"""

from . import data
from .engine import SITES, Lens, Trace, TraceBatch, WeightsUnavailableError
from .widgets import Explorer, explore, export_html

__version__ = "0.1.0"
__all__ = [
    "SITES",
    "Explorer",
    "Lens",
    "Trace",
    "TraceBatch",
    "WeightsUnavailableError",
    "__version__",
    "data",
    "explore",
    "export_html",
]
