"""The explorer widget: one anywidget whose view draws everything; the kernel owns the traces and answers requests.

Who owns what (see ``docs/design.md``):

* The **traits** are the shared state: what is chosen (``layer``, ``cls``, ``site``,
  ``metric``, ``selected``, what-if settings: :data:`VIEW_TRAITS`) and what the view
  needs once per image (crop, token layout, top-k tables). Python code moves the view
  by setting them; the view's changes show up in them, and it may change only the
  chosen ones. The kernel validates every value.
* The **view** (``js/``) draws grid, slider, picker, panels and trajectories from
  one slice store, in the same frame.
* The **service** (:class:`~vitlens_widgets.widgets.service.ExplorerService`)
  answers the view's typed requests (``protocol.py``) for the trace on screen.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import anywidget
import numpy as np
import traitlets
from torch import nn

from ..engine.lens import Lens
from ..engine.preprocess import ImageLike
from ..engine.trace import Trace
from .heap import release_freed_memory, trim_heap
from .payload import layout_dict, png_bytes, token_topk
from .protocol import ProtocolError, error_reply, parse_state
from .service import ExplorerService
from .snapshot import describe, snapshot_output, snapshot_png
from .specs import ATTENTION_OPTIONS, METRIC_SPECS, SITE_SPECS, STATIC, view_specs

BUNDLE = STATIC / "explorer.js"

logger = logging.getLogger(__name__)

PERTURBATION_TRAITS = ("attention", "perturb_blocks", "renormalize", "removed")
# what the user chooses: the only traits a view may change (the others are the kernel's)
VIEW_TRAITS = frozenset(
    {"image_index", "site", "metric", "layer", "cls", "selected", "highlight", "relevance_method"}
    | {"relevance_all_blocks", *PERTURBATION_TRAITS}
)


class OnScreen(NamedTuple):
    """What the trace on screen was traced from: its gallery image, what-if options and the traits that chose them."""

    image: int
    options: dict[str, Any]
    settings: dict[str, Any]


def exclusive(method: Callable) -> Callable:
    """Run ``method`` holding the explorer's lock: the view's changes may arrive in a kernel subshell
    (another thread) while a cell sets traits, and a retrace must not interleave with another."""

    @functools.wraps(method)
    def locked(self: Explorer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


STYLES = STATIC / "explorer.css"


class Explorer(anywidget.AnyWidget):
    """Token grid, layer slider, class picker and class-embedding trajectories of one image or a gallery.

    Set traits to move the view, read them to see what the user chose:

    Example:
        >>> explorer = vl.explore(lens, vl.data.shapes(3, seed=2).images)
        >>> explorer.layer, explorer.cls, explorer.site = 4, "star", "mlp"
        >>> explorer.selected = [29, 30]  # one trajectory per token
    """

    _esm = BUNDLE
    _css = STYLES

    # what the view needs to draw (kernel -> view)
    specs = traitlets.Dict().tag(sync=True)  # sites, metrics, what-if options: see specs.view_specs
    class_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    token_layout = traitlets.Dict().tag(sync=True)  # not `layout`: DOMWidget already owns that name
    n_images = traitlets.Int(1).tag(sync=True)
    image_png = traitlets.Bytes(b"").tag(sync=True)
    prediction = traitlets.Int(0).tag(sync=True)
    base_prediction = traitlets.Int(0).tag(sync=True)  # the unperturbed model's prediction
    topk_indices = traitlets.Bytes(b"").tag(sync=True)  # int16 [rows, T, k] for the current site
    topk_probs = traitlets.Bytes(b"").tag(sync=True)  # float32 [rows, T, k]
    topk_k = traitlets.Int(5).tag(sync=True)
    topk_site = traitlets.Unicode("").tag(sync=True)  # the site of the top-k tables (the view may show another)
    trace_version = traitlets.Int(0).tag(sync=True)  # bumped whenever the traced numbers change
    relevance_maps = traitlets.Bytes(b"").tag(sync=True)  # float32 [rows, h*w]: per-block maps, then the global one
    relevance_rows = traitlets.Int(0).tag(sync=True)
    relevance_blocks = traitlets.List(traitlets.Int()).tag(sync=True)  # the block of each per-block map, in order
    error = traitlets.Unicode("").tag(sync=True)
    # what is chosen (both ways)
    image_index = traitlets.Int(0).tag(sync=True)
    site = traitlets.Unicode("resid").tag(sync=True)
    metric = traitlets.Unicode("identifiability").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    cls = traitlets.Union([traitlets.Int(), traitlets.Unicode()], default_value=0).tag(
        sync=True
    )  # a name becomes its index
    selected = traitlets.List(traitlets.Int()).tag(sync=True)
    highlight = traitlets.Int(-1).tag(sync=True)
    attention = traitlets.Unicode("").tag(sync=True)  # "", "self_only" or "no_cls"
    perturb_blocks = traitlets.List(traitlets.Int()).tag(sync=True)  # empty: every block
    renormalize = traitlets.Bool(False).tag(sync=True)
    removed = traitlets.List(traitlets.Int()).tag(sync=True)  # image tokens removed from the sequence
    relevance_method = traitlets.Unicode("").tag(sync=True)  # "" = off
    relevance_all_blocks = traitlets.Bool(True).tag(sync=True)

    def __init__(self, lens: Lens, images: Sequence[ImageLike], **kwargs: Any):
        if not BUNDLE.is_file():
            raise FileNotFoundError(f"the explorer's front-end bundle is missing ({BUNDLE}); reinstall vitlens-widgets")
        self._lock = threading.RLock()
        self._on_screen: OnScreen | None = None  # set once the first image is traced
        self._relevance_on_hold = False
        self.lens = lens
        self._images = check_gallery(lens, images)
        self.service = ExplorerService(lens)
        from ..explain import METHODS, SIGNED_METHODS

        super().__init__(**kwargs)
        self.trace: Trace = lens.trace(self._images[0])
        self.base_trace: Trace = self.trace
        with self.hold_sync():
            specs = view_specs(lens.depth, METHODS, SIGNED_METHODS)
            self.specs = {**specs, "table_rows": self.service.table_rows_per_message}
            self.class_names = [lens.class_names.short(i) for i in range(lens.num_classes)]
            self.n_images = len(self._images)
            self._show_image(self.image_index, layer=lens.depth)
        self.on_msg(self._answer)

    # --- the kernel's side of the state ------------------------------------------------
    @exclusive
    def _show_image(self, index: int, layer: int | None = None) -> None:
        """Trace image ``index`` with the current what-if settings (the view keeps its layer unless ``layer``
        is given) and show its prediction; when it cannot be traced, ``TraitError`` and nothing changes."""
        options = self.perturbation_options()
        try:
            base = self.lens.trace(self._images[index])
            trace = self._perturbed(index, base, options)
        except (ValueError, TypeError, OSError) as err:
            raise traitlets.TraitError(f"image {index} cannot be shown: {err}") from err
        previous, self.base_trace = self.base_trace, base
        with self.hold_sync(), self._relevance_held():
            self.token_layout = layout_dict(base)
            self.image_png = png_bytes(base.image)
            self.base_prediction = base.prediction.index
            self.cls = base.prediction.index
            if layer is not None:
                self.layer = layer
        self._put_on_screen(trace, index, options)
        self._send_relevance()  # once, for the new image and its class
        if previous is not base:
            previous.forget_logits()  # off screen: its hidden states stay cached, its logits go
            trim_heap()

    def perturbation_options(self) -> dict[str, Any]:
        """The current what-if settings as ``Lens.trace`` keyword arguments.

        Example:
            >>> explorer.attention, explorer.perturb_blocks = "self_only", [5, 6]
            >>> explorer.perturbation_options()
            {'attention': 'self_only', 'renormalize': False, 'blocks': [5, 6]}
        """
        options: dict[str, Any] = {}
        if self.attention:
            options.update(attention=self.attention, renormalize=self.renormalize)
            if self.perturb_blocks:
                options["blocks"] = list(self.perturb_blocks)
        if self.removed:
            options["drop_tokens"] = list(self.removed)
        return options

    @exclusive
    def _retrace(self) -> None:
        """Trace the image on screen with the current what-if settings and tell the view its numbers changed;
        nothing to do when the options are those on screen. Settings that cannot be traced are put back."""
        if self._on_screen is None:
            return  # nothing shown yet: the first image is traced with these settings
        options = self.perturbation_options()
        if options == self._on_screen.options:
            return
        try:
            trace = self._perturbed(self._on_screen.image, self.base_trace, options)
        except (ValueError, TypeError, OSError) as err:
            self.error = f"what-if settings put back: {err}"
            self._restore_perturbation()
            return
        self._put_on_screen(trace, self._on_screen.image, options)

    def _perturbed(self, index: int, base: Trace, options: dict[str, Any]) -> Trace:
        """Image ``index`` traced with the what-if ``options``: ``base``, its unperturbed trace, when there are none."""
        return self.lens.trace(self._images[index], **options, cache=False) if options else base

    def _put_on_screen(self, trace: Trace, image: int, options: dict[str, Any]) -> None:
        """Answer from ``trace`` (of gallery image ``image``, traced with ``options``) and tell the view."""
        self.trace = trace
        settings = {name: copy.copy(getattr(self, name)) for name in PERTURBATION_TRAITS}
        self._on_screen = OnScreen(image, options, settings)
        with self.hold_sync():
            self.error = ""
            self.prediction = trace.prediction.index
            self.trace_version += 1
            self.service.show(trace, image, self.trace_version, base=self.base_trace)
            self._send_topk()
        trim_heap()  # the trace replaced, if not cached, is freed now

    def _restore_perturbation(self) -> None:
        """Put the what-if traits back to the trace on screen's, all at once: their observers find nothing to do."""
        with self.hold_trait_notifications():
            for name, value in self._on_screen.settings.items():
                setattr(self, name, value)

    def _send_topk(self) -> None:
        """The hover and chip tables of the current site, sent together with the site they are for."""
        indices, probs = token_topk(self.trace, self.site)
        with self.hold_sync():
            self.topk_site = self.site
            self.topk_k = indices.shape[-1]
            self.topk_indices = indices.tobytes()
            self.topk_probs = probs.tobytes()

    # --- validation: every value, from Python or from the view ---------------------------
    @traitlets.validate("image_index")
    def _valid_image(self, proposal: dict) -> int:
        n = len(self._images)
        if not 0 <= proposal["value"] < n:
            raise traitlets.TraitError(f"image_index must be 0..{n - 1} (the gallery has {n} images)")
        return proposal["value"]

    @traitlets.validate("site")
    def _valid_site(self, proposal: dict) -> str:
        if proposal["value"] not in SITE_SPECS:
            raise traitlets.TraitError(f"site must be one of {tuple(SITE_SPECS)}")
        return proposal["value"]

    @traitlets.validate("metric")
    def _valid_metric(self, proposal: dict) -> str:
        if proposal["value"] not in METRIC_SPECS:
            raise traitlets.TraitError(f"metric must be one of {tuple(METRIC_SPECS)}")
        return proposal["value"]

    @traitlets.validate("cls")
    def _valid_cls(self, proposal: dict) -> int:
        value = proposal["value"]
        try:
            return self.lens.class_index(value)
        except (ValueError, TypeError, IndexError) as err:
            raise traitlets.TraitError(str(err)) from None

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> int:
        try:
            return SITE_SPECS[self.site].check_layer(proposal["value"], self.lens.depth)
        except ValueError as err:
            raise traitlets.TraitError(str(err)) from None

    @traitlets.validate("selected")
    def _valid_selected(self, proposal: dict) -> list[int]:
        n = self.lens.tokens.n_tokens
        bad = [t for t in proposal["value"] if not 0 <= t < n]
        if bad:
            raise traitlets.TraitError(f"tokens {bad} are out of range 0..{n - 1}")
        return list(dict.fromkeys(proposal["value"]))

    @traitlets.validate("highlight")
    def _valid_highlight(self, proposal: dict) -> int:
        if not -1 <= proposal["value"] < self.lens.tokens.n_tokens:
            raise traitlets.TraitError("highlight must be a token index, or -1 for none")
        return proposal["value"]

    @traitlets.validate("attention")
    def _valid_attention(self, proposal: dict) -> str:
        if proposal["value"] not in ATTENTION_OPTIONS:
            raise traitlets.TraitError(f"attention must be one of {tuple(ATTENTION_OPTIONS)}")
        return proposal["value"]

    @traitlets.validate("perturb_blocks")
    def _valid_blocks(self, proposal: dict) -> list[int]:
        bad = [b for b in proposal["value"] if not 1 <= b <= self.lens.depth]
        if bad:
            raise traitlets.TraitError(f"blocks {bad} are out of range 1..{self.lens.depth}")
        return sorted(set(proposal["value"]))

    @traitlets.validate("removed")
    def _valid_removed(self, proposal: dict) -> list[int]:
        layout = self.lens.tokens
        bad = [t for t in proposal["value"] if not layout.n_prefix <= t < layout.n_tokens]
        if bad:
            raise traitlets.TraitError(f"only image tokens can be removed; got {bad}")
        removed = sorted(set(proposal["value"]))
        if len(removed) >= layout.n_patches:
            raise traitlets.TraitError("at least one image token must remain")
        return removed

    @traitlets.validate("relevance_method")
    def _valid_relevance(self, proposal: dict) -> str:
        from ..explain import METHODS

        if proposal["value"] not in ("", *METHODS):
            raise traitlets.TraitError(f"relevance_method must be '' or one of {METHODS}")
        return proposal["value"]

    @exclusive
    def set_state(self, sync_data: dict) -> None:
        """A change from the view: applied when valid; otherwise the view is told why and put back.
        Changes to the kernel's own traits (anything but :data:`VIEW_TRAITS`) are ignored, and the view put back.

        Example:
            >>> explorer.set_state({"layer": 99})  # as if the view sent it: not applied
            >>> explorer.error
            'Not applied: layer 99 is out of range ...'
        """
        sync_data = self._view_changes(sync_data)
        if not sync_data:
            return
        try:
            super().set_state(sync_data)  # validated together: a site and its layer may arrive in one update
        except (traitlets.TraitError, ValueError, TypeError) as err:
            self.error = f"Not applied: {err}"
            self.send_state(key=[k for k in sync_data if k in self.keys])
            return
        if self.error.startswith("Not applied"):
            self.error = ""

    def _view_changes(self, sync_data: dict) -> dict:
        """The part of a view's update it may make; its values of the kernel's own traits are logged and put back."""
        owned = [name for name in sync_data if name in KERNEL_TRAITS]
        if owned:
            logger.warning("ignored a view's change to %s: the kernel sets these", ", ".join(owned))
            self.send_state(key=owned)
        return {name: value for name, value in sync_data.items() if name not in KERNEL_TRAITS}

    # --- reactions --------------------------------------------------------------------------
    @traitlets.observe("site")
    @exclusive
    def _site_changed(self, change: dict) -> None:
        first = SITE_SPECS[change["new"]].layers(self.lens.depth)[0]
        if self.layer < first:
            self.layer = first
        self._send_topk()
        for trace in {id(t): t for t in (self.trace, self.base_trace)}.values():
            trace.forget_logits(keep=[self.site])  # 10 MB per site for ViT-B/16; projected again if revisited
        trim_heap()

    @traitlets.observe("image_index")
    @exclusive
    def _image_changed(self, change: dict) -> None:
        if self._on_screen is None or change["new"] == self._on_screen.image:
            return
        try:
            self._show_image(change["new"])
        except traitlets.TraitError:
            self.image_index = self._on_screen.image  # kernel and view agree on the image still shown
            raise

    @traitlets.observe("attention", "perturb_blocks", "renormalize", "removed")
    @exclusive
    def _perturbation_changed(self, change: dict) -> None:
        self._retrace()

    @traitlets.observe("relevance_method", "cls")
    @exclusive
    def _relevance_changed(self, change: dict) -> None:
        if not self._relevance_on_hold:
            self._send_relevance()

    @contextmanager
    def _relevance_held(self) -> Iterator[None]:
        """Hold relevance updates while a new image sets its class: the caller computes the maps once after."""
        self._relevance_on_hold = True
        try:
            yield
        finally:
            self._relevance_on_hold = False

    def _send_relevance(self) -> None:
        """Compute the relevance maps of the current image and class (unperturbed model) for the overlay."""
        if not self.relevance_method:
            return
        from ..explain import relevance

        try:
            result = relevance(self.lens, self._images[self.image_index], cls=self.cls, method=self.relevance_method)
        except ValueError as err:
            self.error = str(err)
            return
        maps = [result.map] if result.per_block is None else [*result.per_block, result.map]
        data = np.stack([m.reshape(-1) for m in maps]).astype(np.float32)
        with self.hold_sync():
            self.relevance_rows = len(maps)
            self.relevance_blocks = [] if result.per_block is None else list(range(1, len(result.per_block) + 1))
            self.relevance_maps = data.tobytes()

    def _answer(self, _widget: Any, content: Any, _buffers: list) -> None:
        if isinstance(content, dict) and content.get("kind") == "state":
            header, buffers = self._take_state(content), []
        else:
            header, buffers = self.service.answer(content)
        self.send(header, buffers=buffers or None)

    def _take_state(self, content: dict) -> dict[str, Any]:
        """A view's ``state`` request: applied as its widget update would be, then sent back as the kernel's own
        update, so that the view's model holds the values without sending them again."""
        try:
            request = parse_state(content)
        except ProtocolError as err:
            return error_reply(content, str(err))
        self.set_state(request.state)  # validated; a refused value is put back and explained in `error`
        self.send_state(key=list(request.state))
        return {"kind": "state", "id": request.id}

    # --- for Python users -------------------------------------------------------------------
    @property
    def images(self) -> list:
        """The gallery, as given."""
        return list(self._images)

    @property
    def perturbed(self) -> bool:
        return self.trace is not self.base_trace

    def clear_cache(self) -> None:
        """Give memory back: forget the lens's recent traces and the service's derived tables, and
        return freed heap pages to the system (the images on screen are traced again when next shown).

        Example:
            >>> explorer.clear_cache()
        """
        self.lens.clear_cache()
        self.service.clear_cache()
        release_freed_memory()

    def snapshot(self) -> bytes:
        """PNG bytes of what the explorer shows now: the heat map beside the trajectories.

        Example:
            >>> Path("explorer.png").write_bytes(vl.explore(lens, image).snapshot())
        """
        return snapshot_png(self.trace, self.cls, self.site, self.metric, self.layer, self.selected)

    def _ipython_display_(self) -> None:
        """Show the live widget, followed by a static snapshot (a captioned PNG) for viewers without a kernel.

        GitHub, nbviewer and HTML exports of a saved notebook cannot run the widget;
        they show the snapshot instead. Live JupyterLab hides it (``explorer.css``).
        """
        from IPython.display import display

        caption = describe(self.trace, self.cls, self.site, self.metric, self.layer)
        # Drawn first: once the view shows, the kernel is free.
        png = snapshot_png(self.trace, self.cls, self.site, self.metric, self.layer, self.selected, caption)
        snapshot, snapshot_metadata = snapshot_output(png, caption)
        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        display(data, metadata=metadata, raw=True)
        display(snapshot, metadata=snapshot_metadata, raw=True)

    def to_html(self, path: str | os.PathLike, max_classes: int | None = None) -> int:
        """Write a self-contained interactive page of this explorer's gallery (no kernel, no CDN); returns its size.

        Example:
            >>> vl.explore(lens, vl.data.shapes(3, seed=2).images).to_html("explorer.html")
        """
        from .export import export_html

        return export_html(self.lens, self._images, path, max_classes=max_classes)


EXPLORER_TRAITS = frozenset(Explorer.class_own_traits(sync=True))
assert VIEW_TRAITS.issubset(EXPLORER_TRAITS), "every trait a view may set is an explorer trait"
KERNEL_TRAITS = EXPLORER_TRAITS - VIEW_TRAITS  # what the kernel sets and a view only reads


def check_gallery(lens: Lens, images: Any) -> list:
    """The gallery as a list, every image read and preprocessed once so that a bad one fails now, by index."""
    gallery = as_gallery(images)
    for i, image in enumerate(gallery):
        try:
            lens.prepare(image)
        except (ValueError, TypeError, OSError) as err:
            raise ValueError(f"image {i} of the gallery cannot be shown: {err}") from err
    return gallery


def as_gallery(images: Any) -> list:
    """One image or a sequence of images → a non-empty list of images."""
    import torch
    from PIL import Image

    if images is None:
        raise TypeError("explore needs an image or a list of images, got None")
    if isinstance(images, (Image.Image, str, os.PathLike)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]  # [n, ...] stacks are galleries
    try:
        gallery = list(images)
    except TypeError:
        raise TypeError(f"explore needs an image or a list of images, got {type(images).__name__}") from None
    if not gallery:
        raise ValueError("explore needs at least one image")
    return gallery


def explore(model: Lens | nn.Module | str, images: ImageLike | Sequence[ImageLike], **lens_kwargs: Any) -> Explorer:
    """Open the explorer on one image or a small gallery.

    ``model``: a :class:`Lens`, a supported timm model, or a timm model name
    (``Lens.from_timm`` with ``lens_kwargs``). ``images``: an image, or a list
    of images to step through (each a ``PIL.Image``, path, ``HxWx3`` uint8 array
    or preprocessed tensor); every image is checked now.

    Example:
        >>> import vitlens_widgets as vl
        >>> vl.explore(vl.Lens.demo(), vl.data.shapes(3, seed=2).images)
    """
    return Explorer(as_lens(model, **lens_kwargs), images)


def as_lens(model: Lens | nn.Module | str, **lens_kwargs: Any) -> Lens:
    if isinstance(model, Lens):
        return model
    if isinstance(model, str):
        return Lens.from_timm(model, **lens_kwargs)
    if isinstance(model, nn.Module):
        return Lens(model, **lens_kwargs)
    raise TypeError(f"explore needs a Lens, a timm model or a model name, got {type(model).__name__}")
