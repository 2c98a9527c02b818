"""Notebook views: the explorer widget and its self-contained HTML export."""

from .app import Explorer, explore
from .explorer import ExplorerView
from .export import export_html

__all__ = ["Explorer", "ExplorerView", "explore", "export_html"]
