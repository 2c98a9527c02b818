"""vitlens-widgets: look inside Vision Transformers in class embedding space, in Jupyter.

Example:
    >>> import vitlens_widgets as vl
    >>> lens = vl.Lens.demo()
    >>> trace = lens.trace(vl.data.shapes(1).images[0])
    >>> trace.identifiability(trace.prediction.index, "resid")  # [L+1, T]
    >>> vl.explore(lens, vl.data.shapes(3, seed=2).images)      # the explorer widget
"""

from __future__ import annotations

import importlib
from typing import Any

from . import data
from .engine import SITES, Lens, Trace, TraceBatch, WeightsUnavailableError

__version__ = "0.1.0"

# Widgets, analyses and plots pull in Jupyter and pandas: imported on first use, so that
# `import vitlens_widgets` in a script costs little more than importing timm.
_LAZY = {
    "explore": ("vitlens_widgets.widgets", "explore"),
    "export_html": ("vitlens_widgets.widgets", "export_html"),
    "Explorer": ("vitlens_widgets.widgets", "Explorer"),
    "analysis": ("vitlens_widgets.analysis", None),
    "plots": ("vitlens_widgets.plots", None),
    "widgets": ("vitlens_widgets.widgets", None),
    "explain": ("vitlens_widgets.explain", None),
    "lab": ("vitlens_widgets.lab", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vitlens_widgets' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "SITES",
    "Explorer",
    "Lens",
    "Trace",
    "TraceBatch",
    "WeightsUnavailableError",
    "__version__",
    "analysis",
    "data",
    "explain",
    "explore",
    "export_html",
    "lab",
    "plots",
]
