"""Notebook views: the explorer widget, its data service and its self-contained HTML export."""

from .explorer import Explorer, explore
from .export import export_html

__all__ = ["Explorer", "explore", "export_html"]
