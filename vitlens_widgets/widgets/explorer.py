"""The explorer: token grid, layer slider and class picker (anywidget), linked to bqplot trajectories."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import anywidget
import numpy as np
import traitlets

from ..engine.lens import Lens
from ..engine.preprocess import ImageLike
from ..engine.trace import SITES, RankIndex, Trace, layer_numbers
from .payload import (
    METRICS,
    STATIC,
    layout_dict,
    metric_slices,
    png_bytes,
    prefetch_classes,
    token_memories,
    token_topk,
)

BUNDLE = STATIC / "explorer.js"
STYLES = STATIC / "explorer.css"
LOGITS_TABLE_BYTES = 32 * 2**20  # largest logits table sent to the view in one message (ViT-B/16: 10 MB)
RECENT_SLICES = 256  # metric slices remembered per view ([rows, T] float32 each: 10 KB for ViT-B/16)


class ExplorerView(anywidget.AnyWidget):
    """The front end: image with a token grid, controls, and the view state they share with the kernel.

    Numbers reach the browser only as binary buffers: per-site top-k tables in
    traits, metric slices ``[classes, rows, tokens]`` in custom messages answered
    on request (and pushed ahead of time for the classes most likely needed).

    Example:
        >>> view = ExplorerView(lens, vl.data.shapes(3, seed=2).images)  # the grid alone, without trajectories
        >>> view.site, view.metric, view.cls = "mlp", "logit", lens.class_index("star")
    """

    _esm = BUNDLE
    _css = STYLES

    # what is shown
    class_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    token_layout = traitlets.Dict().tag(sync=True)  # not `layout`: DOMWidget already owns that name
    n_images = traitlets.Int(1).tag(sync=True)
    image_index = traitlets.Int(0).tag(sync=True)
    image_png = traitlets.Bytes(b"").tag(sync=True)
    prediction = traitlets.Int(0).tag(sync=True)
    topk_indices = traitlets.Bytes(b"").tag(sync=True)  # int16 [rows, T, k] for the current site
    topk_probs = traitlets.Bytes(b"").tag(sync=True)  # float32 [rows, T, k]
    topk_k = traitlets.Int(5).tag(sync=True)
    # what the user chose
    site = traitlets.Unicode("resid").tag(sync=True)
    metric = traitlets.Unicode("identifiability").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    cls = traitlets.Int(0).tag(sync=True)
    selected = traitlets.List(traitlets.Int()).tag(sync=True)
    highlight = traitlets.Int(-1).tag(sync=True)
    playing = traitlets.Bool(False).tag(sync=True)
    # what-if: perturbations of the forward pass (see vitlens_widgets.engine.perturb)
    attention = traitlets.Unicode("").tag(sync=True)  # "", "self_only" or "no_cls"
    perturb_blocks = traitlets.List(traitlets.Int()).tag(sync=True)  # empty: every block
    renormalize = traitlets.Bool(False).tag(sync=True)
    removed = traitlets.List(traitlets.Int()).tag(sync=True)  # image tokens removed from the sequence
    trace_version = traitlets.Int(0).tag(sync=True)  # bumped whenever the traced numbers change
    base_prediction = traitlets.Int(0).tag(sync=True)  # the unperturbed model's prediction
    # relevance overlay (vitlens_widgets.explain): "" = off
    relevance_method = traitlets.Unicode("").tag(sync=True)
    relevance_all_blocks = traitlets.Bool(True).tag(sync=True)
    relevance_maps = traitlets.Bytes(b"").tag(sync=True)  # float32 [rows, h*w]: per-block maps, then the global one
    relevance_rows = traitlets.Int(0).tag(sync=True)
    # kernel -> view status
    error = traitlets.Unicode("").tag(sync=True)
    standalone = traitlets.Bool(False).tag(sync=True)

    def __init__(self, lens: Lens, images: Sequence[ImageLike], **kwargs: Any):
        if not BUNDLE.is_file():
            raise FileNotFoundError(f"the explorer's front-end bundle is missing ({BUNDLE}); reinstall vitlens-widgets")
        if len(images) == 0:
            raise ValueError("explore needs at least one image")
        super().__init__(**kwargs)
        self.lens = lens
        self._recent_slices: OrderedDict[tuple[int, str, str, int], tuple[Trace, np.ndarray]] = OrderedDict()
        self._rank_index: tuple[Trace, str, RankIndex] | None = None  # one trace and site at a time
        self._last_rank_ask: tuple[int, str] | None = None
        self._images = list(images)
        self.trace: Trace = lens.trace(self._images[0])
        self.base_trace: Trace = self.trace
        self.class_names = [lens.class_names.short(i) for i in range(lens.num_classes)]
        self.n_images = len(self._images)
        self._show_image(0)
        self._projections: dict[tuple[int, str], np.ndarray] = {}  # (block, kind) -> memories' top classes
        self.on_msg(self._handle_message)

    # --- kernel-side state changes ---------------------------------------------------
    def _show_image(self, index: int) -> None:
        base = self.lens.trace(self._images[index])
        self.base_trace = base
        with self.hold_sync():
            self.token_layout = layout_dict(base)
            self.image_png = png_bytes(base.image)
            self.base_prediction = base.prediction.index
            self.selected = [s for s in self.selected if s < base.tokens.n_tokens]
            if self.image_index != index:
                self.image_index = index
            self.cls = base.prediction.index
            self.layer = min(self.layer, base.depth) if self.layer else base.depth
        self._retrace()

    def perturbation_options(self) -> dict[str, Any]:
        """The current what-if settings as ``Lens.trace`` keyword arguments."""
        options: dict[str, Any] = {}
        if self.attention:
            options.update(attention=self.attention, renormalize=self.renormalize)
            if self.perturb_blocks:
                options["blocks"] = list(self.perturb_blocks)
        if self.removed:
            options["drop_tokens"] = list(self.removed)
        return options

    def _retrace(self) -> None:
        """Trace the current image with the current perturbation and tell the view its numbers changed."""
        try:
            trace = self.lens.trace(self._images[self.image_index], **self.perturbation_options())
        except ValueError as err:
            self.error = str(err)
            return
        self.trace = trace
        with self.hold_sync():
            self.error = ""
            self.prediction = trace.prediction.index
            self.trace_version += 1
            self._send_topk()
        self._push_prefetch()

    def _send_topk(self) -> None:
        indices, probs = token_topk(self.trace, self.site)
        self.topk_k = indices.shape[-1]
        self.topk_indices = indices.tobytes()
        self.topk_probs = probs.tobytes()

    def _push_prefetch(self) -> None:
        classes = prefetch_classes(self.trace)
        self._reply({"id": -1, "site": self.site, "metric": self.metric, "classes": classes})

    @traitlets.validate("site")
    def _valid_site(self, proposal: dict) -> str:
        if proposal["value"] not in SITES:
            raise traitlets.TraitError(f"site must be one of {SITES}")
        return proposal["value"]

    @traitlets.validate("metric")
    def _valid_metric(self, proposal: dict) -> str:
        if proposal["value"] not in METRICS:
            raise traitlets.TraitError(f"metric must be one of {METRICS}")
        return proposal["value"]

    @traitlets.validate("cls")
    def _valid_cls(self, proposal: dict) -> int:
        if not 0 <= proposal["value"] < self.lens.num_classes:
            raise traitlets.TraitError(f"cls must be a class index 0..{self.lens.num_classes - 1}")
        return proposal["value"]

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> int:
        if not 0 <= proposal["value"] <= self.lens.depth:
            raise traitlets.TraitError(f"layer must be 0..{self.lens.depth}")
        return proposal["value"]

    @traitlets.validate("selected")
    def _valid_selected(self, proposal: dict) -> list[int]:
        n = self.lens.tokens.n_tokens
        bad = [t for t in proposal["value"] if not 0 <= t < n]
        if bad:
            raise traitlets.TraitError(f"tokens {bad} are out of range 0..{n - 1}")
        return list(dict.fromkeys(proposal["value"]))

    @traitlets.observe("site")
    def _site_changed(self, change: dict) -> None:
        self._send_topk()
        self._push_prefetch()

    @traitlets.observe("metric")
    def _metric_changed(self, change: dict) -> None:
        self._push_prefetch()

    @traitlets.validate("attention")
    def _valid_attention(self, proposal: dict) -> str:
        if proposal["value"] not in ("", "self_only", "no_cls"):
            raise traitlets.TraitError("attention must be '', 'self_only' or 'no_cls'")
        return proposal["value"]

    @traitlets.validate("removed")
    def _valid_removed(self, proposal: dict) -> list[int]:
        layout = self.lens.tokens
        bad = [t for t in proposal["value"] if not layout.n_prefix <= t < layout.n_tokens]
        if bad:
            raise traitlets.TraitError(f"only image tokens can be removed; got {bad}")
        return sorted(set(proposal["value"]))

    @traitlets.observe("attention", "perturb_blocks", "renormalize", "removed")
    def _perturbation_changed(self, change: dict) -> None:
        self._retrace()

    @traitlets.validate("relevance_method")
    def _valid_relevance(self, proposal: dict) -> str:
        from ..explain import METHODS

        if proposal["value"] not in ("", *METHODS):
            raise traitlets.TraitError(f"relevance_method must be '' or one of {METHODS}")
        return proposal["value"]

    @traitlets.observe("relevance_method", "cls", "image_index")
    def _relevance_changed(self, change: dict) -> None:
        self._send_relevance()

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
            self.relevance_maps = data.tobytes()

    @traitlets.observe("image_index")
    def _image_changed(self, change: dict) -> None:
        if change["new"] != change["old"] and 0 <= change["new"] < len(self._images):
            self._show_image(change["new"])

    # --- requests from the view ------------------------------------------------------------
    def _handle_message(self, _widget: Any, content: dict, _buffers: list) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            self.send({"type": "pong", "id": content.get("id")})
        elif kind == "ready":  # a view started listening: push what it will most likely ask for
            self._push_prefetch()
        elif kind == "slices":
            self._reply(content)
        elif kind == "memories":
            self._reply_memories(content)
        elif kind == "logits":
            self._reply_logits(content)
        else:
            self.send(
                {
                    "type": "error",
                    "id": content.get("id") if isinstance(content, dict) else None,
                    "message": f"unknown request {kind!r}",
                }
            )

    def _reply(self, request: dict) -> None:
        try:
            site, metric, classes = self._check_request(request)
            data = self._slices(self.trace, site, metric, classes)
        except (ValueError, TypeError, KeyError) as err:
            self.send({"type": "error", "id": request.get("id"), "message": str(err)})
            return
        header = {
            "type": "slices",
            "id": request.get("id"),
            "image_index": self.image_index,
            "version": self.trace_version,
            "site": site,
            "metric": metric,
            "classes": classes,
            "rows": int(data.shape[1]),
            "tokens": int(data.shape[2]),
        }
        self.send(header, buffers=[data.tobytes()])

    def _reply_logits(self, request: dict) -> None:
        """Every class logit of one site (and the log-partition per token), so the view derives any class's
        slice itself; declined with an error above :data:`LOGITS_TABLE_BYTES` (the view then keeps asking per class)."""
        site = request.get("site")
        if site not in SITES:
            self.send({"type": "error", "id": request.get("id"), "message": f"unknown site {site!r}"})
            return
        logits = np.ascontiguousarray(self.trace.logits(site), dtype=np.float32)
        if logits.nbytes > LOGITS_TABLE_BYTES:
            message = f"{logits.nbytes / 2**20:.0f} MiB of logits is too much to send at once"
            self.send({"type": "error", "id": request.get("id"), "message": message})
            return
        rows, tokens, classes = logits.shape
        header = {
            "type": "logits",
            "id": request.get("id"),
            "image_index": self.image_index,
            "version": self.trace_version,
            "site": site,
            "rows": rows,
            "tokens": tokens,
            "classes": classes,
        }
        self.send(header, buffers=[memoryview(logits), memoryview(self.trace.log_partition(site))])

    def _check_request(self, request: dict) -> tuple[str, str, list[int]]:
        site, metric, classes = request.get("site"), request.get("metric"), request.get("classes")
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        if not isinstance(classes, list) or not classes or len(classes) > 256:
            raise ValueError("classes must be a list of 1..256 class indices")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.lens.num_classes:
                raise ValueError(f"class {c!r} is out of range 0..{self.lens.num_classes - 1}")
        return site, metric, classes

    def _reply_memories(self, request: dict) -> None:
        """The most activated memories of one token at one block, and the classes each writes."""
        try:
            token = self.lens.tokens.check_token(request.get("token"))
            layer, site = request.get("layer"), request.get("site")
            kind = "attn" if site == "attn" else "mlp"
            if not isinstance(layer, int) or not 1 <= layer <= self.lens.depth:
                raise ValueError("memories live in blocks 1..L: move the layer slider past the embeddings")
            memories = token_memories(self.lens, self.trace, token, layer, kind, self._projections)
        except (ValueError, TypeError) as err:
            self.send({"type": "error", "id": request.get("id"), "request": "memories", "message": str(err)})
            return
        header = {
            "type": "memories",
            "id": request.get("id"),
            "version": self.trace_version,
            "token": token,
            "layer": layer,
            "kind": kind,
            "memories": [int(m) for m in memories["memory"]],
            "classes": memories["classes"].astype(int).tolist(),
        }
        self.send(header, buffers=[memories["coefficient"].astype(np.float32).tobytes()])

    # --- helpers for the trajectories -----------------------------------------------------------
    def current_slice(self, baseline: bool = False) -> np.ndarray:
        """float32 ``[rows, T]``: the chosen metric of the chosen class at every layer and token of the chosen site.

        ``baseline=True`` reads the unperturbed trace instead of the perturbed one.
        """
        trace = self.base_trace if baseline else self.trace
        return self._slices(trace, self.site, self.metric, [self.cls])[0]

    def _slices(self, trace: Trace, site: str, metric: str, classes: list[int]) -> np.ndarray:
        """:func:`metric_slices`, remembering recent ones: a class change asks for the same slice twice
        (the view's request, then the trajectories' redraw when the trait syncs)."""
        missing = [c for c in classes if self._recent_slices.get((id(trace), site, metric, c), (None,))[0] is not trace]
        if missing:
            index = self._index_for(trace, site, len(missing)) if metric == "identifiability" else None
            for c, data in zip(missing, metric_slices(trace, site, metric, missing, index)):
                self._recent_slices[(id(trace), site, metric, c)] = (trace, data)
        out = np.stack([self._recent_slices[(id(trace), site, metric, c)][1] for c in classes])
        for c in classes:
            self._recent_slices.move_to_end((id(trace), site, metric, c))
        while len(self._recent_slices) > RECENT_SLICES:
            self._recent_slices.popitem(last=False)
        return out

    def _index_for(self, trace: Trace, site: str, n_classes: int) -> RankIndex | None:
        """The :class:`RankIndex` of one trace and site, built once it pays: for a request of several
        classes, or the second request in a row for the same trace and site (a single class alone is
        cheaper to rank directly, e.g. right after a site change)."""
        if self._rank_index is not None and self._rank_index[0] is trace and self._rank_index[1] == site:
            return self._rank_index[2]
        ask, self._last_rank_ask = self._last_rank_ask, (id(trace), site)
        if n_classes == 1 and ask != (id(trace), site):
            return None
        self._rank_index = (trace, site, trace.rank_index(site))
        return self._rank_index[2]

    @property
    def perturbed(self) -> bool:
        return self.trace is not self.base_trace

    def layer_axis(self) -> list[int]:
        return list(layer_numbers(self.site, self.lens.depth))
