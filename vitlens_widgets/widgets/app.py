"""``vl.explore``: the explorer view and its trajectories, linked in the kernel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ipywidgets
from torch import nn

from ..engine.lens import Lens
from ..engine.preprocess import ImageLike
from ..plots.trajectories import TrajectoryFigure
from .explorer import ExplorerView
from .snapshot import describe, snapshot_html, snapshot_png


class Explorer(ipywidgets.VBox):
    """The explorer: :class:`ExplorerView` (grid, slider, picker) above bqplot trajectories.

    The view and the plot share one state: the layer (slider ↔ marker, both
    ways), the class, site and metric (lines redrawn), the selected tokens (one
    line each) and the hovered line (its token highlighted in the grid).

    Example:
        >>> explorer = vl.explore(lens, vl.data.shapes(3, seed=2).images)
        >>> explorer.view.layer = 4  # moves the slider and the plot's layer marker
    """

    def __init__(self, lens: Lens, images: Sequence[ImageLike]):
        self.view = ExplorerView(lens, images)
        self.plot = TrajectoryFigure(on_layer=self._set_layer, on_hover_token=self._set_highlight)
        super().__init__(children=[self.view, self.plot.figure], layout={"width": "100%"})
        self.view.observe(self._redraw, names=["cls", "site", "metric", "selected", "image_index", "trace_version"])
        self.view.observe(lambda change: self.plot.set_layer(change["new"]), names="layer")
        self._redraw()
        self.plot.set_layer(self.view.layer)

    @property
    def lens(self) -> Lens:
        return self.view.lens

    def _set_layer(self, layer: int) -> None:
        site_layers = self.view.layer_axis()
        self.view.layer = min(max(layer, site_layers[0]), site_layers[-1])

    def _set_highlight(self, token: int) -> None:
        self.view.highlight = token

    def _redraw(self, _change: dict | None = None) -> None:
        view = self.view
        tokens = view.trace.tokens
        self.plot.update(
            layers=view.layer_axis(),
            values=view.current_slice(),
            n_prefix=tokens.n_prefix,
            has_cls="cls" in tokens.prefix,
            selected=view.selected,
            token_names=tokens.names,
            metric=view.metric,
            class_name=view.class_names[view.cls],
            baseline=view.current_slice(baseline=True) if view.perturbed else None,
        )
        self.plot.set_layer(view.layer)

    def snapshot(self) -> bytes:
        """PNG bytes of what the explorer shows now: the heat map beside the trajectories.

        Example:
            >>> Path("explorer.png").write_bytes(vl.explore(lens, image).snapshot())
        """
        view = self.view
        return snapshot_png(view.trace, view.cls, view.site, view.metric, view.layer, view.selected)

    def _ipython_display_(self) -> None:
        """Show the live widget, followed by a static snapshot for viewers without a kernel.

        GitHub, nbviewer and HTML exports of a saved notebook cannot run the widget;
        they show the snapshot instead. Live JupyterLab hides it (``explorer.css``).
        """
        from IPython.display import HTML, display

        display(self._repr_mimebundle_(), raw=True)
        view = self.view
        caption = describe(view.trace, view.cls, view.site, view.metric, view.layer)
        display(HTML(snapshot_html(self.snapshot(), caption)))

    def to_html(self, path: str | os.PathLike, max_classes: int = 64) -> int:
        """Write a self-contained interactive page of this explorer (no kernel, no CDN); returns its size in bytes.

        Example:
            >>> vl.explore(lens, vl.data.shapes(3, seed=2).images).to_html("explorer.html")
        """
        from .export import export_html

        return export_html(self.lens, self.view._images, path, max_classes=max_classes)


def explore(model: Lens | nn.Module | str, images: ImageLike | Sequence[ImageLike], **lens_kwargs: Any) -> Explorer:
    """Open the explorer on one image or a small gallery.

    ``model``: a :class:`Lens`, a supported timm model, or a timm model name
    (``Lens.from_timm`` with ``lens_kwargs``). ``images``: an image, or a list
    of images to step through (each a ``PIL.Image``, path, ``HxWx3`` uint8 array
    or preprocessed tensor).

    Example:
        >>> import vitlens_widgets as vl
        >>> vl.explore(vl.Lens.demo(), vl.data.shapes(3, seed=2).images)
    """
    lens = _as_lens(model, **lens_kwargs)
    return Explorer(lens, _as_gallery(images))


def _as_lens(model: Lens | nn.Module | str, **lens_kwargs: Any) -> Lens:
    if isinstance(model, Lens):
        return model
    if isinstance(model, str):
        return Lens.from_timm(model, **lens_kwargs)
    if isinstance(model, nn.Module):
        return Lens(model, **lens_kwargs)
    raise TypeError(f"explore needs a Lens, a timm model or a model name, got {type(model).__name__}")


def _as_gallery(images: Any) -> list:
    """One image or a list of images → a list of images."""
    import numpy as np
    import torch
    from PIL import Image

    single = (Image.Image, str, os.PathLike)
    if isinstance(images, single):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]  # [n, ...] stacks are galleries
    gallery = list(images)
    if not gallery:
        raise ValueError("explore needs at least one image")
    return gallery
