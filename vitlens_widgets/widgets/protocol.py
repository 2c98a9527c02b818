"""The explorer's request/response protocol, kernel side (its twin is ``js/protocol.ts``).

The view asks, the kernel answers; nothing is pushed unasked. Every request is a
JSON object with a ``kind`` and an integer ``id``; every reply (including an
error) carries the same ``id``. Numbers travel as binary buffers, never JSON lists.

==========  ===============================================  =================================
kind        request fields                                   reply (header; buffers)
==========  ===============================================  =================================
ping        —                                                pong
state       state (the view's layer, highlight, selected,   state (the widget's own update
            cls, metric: :data:`STATE_TRAITS`)               carries the values first)
slices      image, site, metric, classes (1..256 class       slices; float32 [classes, rows, T]
            indices), base (optional: the unperturbed trace)
logits      image, site, start, stop (rows of the site's     logits; float32 [n, T, C], [n, T]
            table)
memories    image, site, layer (a block), token              memories; float32 [k] coefficients
==========  ===============================================  =================================

A ``state`` request is answered by the widget, not the service: it sets those traits as a widget
update from the view would (validated, a refused value put back), but without the kernel's busy
status reaching the page (the request is quiet, like every request).

``image`` is the gallery image the view is showing: the kernel answers only for the
image it is showing too (an error otherwise), so numbers of one image are never taken
for another's. Replies to ``slices``, ``logits`` and ``memories`` also say which
``image`` and trace ``version`` they describe, so a view can drop answers for an older
trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.trace import SITES, layer_numbers
from .specs import METRICS, SITE_SPECS

MAX_CLASSES_PER_REQUEST = 256
# The view's choices the kernel does not act on, told in a `state` request (twin: STATE_TRAITS in js/protocol.ts).
STATE_TRAITS = ("layer", "highlight", "selected", "cls", "metric")


class ProtocolError(ValueError):
    """A request the kernel cannot answer; the message is shown to the user."""


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class SlicesRequest:
    id: int
    image: int  # the gallery image the view is showing
    site: str
    metric: str
    classes: tuple[int, ...]
    base: bool = False


@dataclass(frozen=True)
class LogitsRequest:
    id: int
    image: int  # the gallery image the view is showing
    site: str
    start: int
    stop: int


@dataclass(frozen=True)
class MemoriesRequest:
    id: int
    image: int  # the gallery image the view is showing
    site: str
    layer: int
    token: int


@dataclass(frozen=True)
class StateRequest:
    id: int
    state: dict[str, Any]  # a non-empty part of STATE_TRAITS; values are checked by the traits


Request = Ping | SlicesRequest | LogitsRequest | MemoriesRequest


@dataclass(frozen=True)
class Limits:
    """What valid requests may ask of the model on screen."""

    num_classes: int
    depth: int
    n_tokens: int


def request_id(content: Any) -> int | None:
    """The request's id when it has a valid one (errors echo it), else None."""
    value = content.get("id") if isinstance(content, dict) else None
    return value if _is_int(value) and value >= 0 else None


def parse_request(content: Any, limits: Limits) -> Request:
    """A typed request from a view's message (:class:`ProtocolError` saying what is wrong otherwise)."""
    if not isinstance(content, dict):
        raise ProtocolError(f"a request must be a JSON object, got {type(content).__name__}")
    rid = request_id(content)
    if rid is None:
        raise ProtocolError("a request needs an integer id >= 0")
    kind = content.get("kind")
    if kind == "ping":
        return Ping(rid)
    if kind == "slices":
        return _slices(content, rid, limits)
    if kind == "logits":
        return _logits(content, rid, limits)
    if kind == "memories":
        return _memories(content, rid, limits)
    raise ProtocolError(f"unknown request {kind!r}")


def parse_state(content: Any) -> StateRequest:
    """A ``state`` request (:class:`ProtocolError` saying what is wrong otherwise)."""
    rid = request_id(content)
    if rid is None or content.get("kind") != "state":
        raise ProtocolError("a state request needs kind 'state' and an integer id >= 0")
    state = content.get("state")
    if not isinstance(state, dict) or not state:
        raise ProtocolError("state must be an object of trait values")
    others = sorted(set(state) - set(STATE_TRAITS))
    if others:
        raise ProtocolError(f"a state request sets only {', '.join(STATE_TRAITS)}, not {', '.join(others)}")
    return StateRequest(rid, dict(state))


def _slices(content: dict, rid: int, limits: Limits) -> SlicesRequest:
    image, site, metric, classes = _image(content), _site(content), _metric(content), _classes(content, limits)
    base = content.get("base", False)
    if not isinstance(base, bool):
        raise ProtocolError(f"base must be true or false, got {base!r}")
    return SlicesRequest(rid, image, site, metric, classes, base)


def _logits(content: dict, rid: int, limits: Limits) -> LogitsRequest:
    image, site = _image(content), _site(content)
    start, stop = _int(content, "start"), _int(content, "stop")
    rows = len(layer_numbers(site, limits.depth))
    if not 0 <= start < stop <= rows:
        raise ProtocolError(f"rows {start}..{stop} are outside the site's 0..{rows}")
    return LogitsRequest(rid, image, site, start, stop)


def _memories(content: dict, rid: int, limits: Limits) -> MemoriesRequest:
    image, site, layer, token = _image(content), _site(content), _int(content, "layer"), _int(content, "token")
    blocks = layer_numbers(SITE_SPECS[site].memories, limits.depth)  # the sublayer's: no embeddings
    if layer not in blocks:
        raise ProtocolError(
            f"memories live in blocks {blocks.start}..{blocks.stop - 1}: move the layer slider past the embeddings"
        )
    if not 0 <= token < limits.n_tokens:
        raise ProtocolError(f"token {token} is out of range 0..{limits.n_tokens - 1}")
    return MemoriesRequest(rid, image, site, layer, token)


def error_reply(content: Any, message: str) -> dict[str, Any]:
    kind = content.get("kind") if isinstance(content, dict) else None
    return {
        "kind": "error",
        "id": request_id(content),
        "request": kind if isinstance(kind, str) else None,
        "message": message,
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(content: dict, name: str) -> int:
    value = content.get(name)
    if not _is_int(value):
        raise ProtocolError(f"{name} must be an integer, got {value!r}")
    return value


def _image(content: dict) -> int:
    image = content.get("image")
    if not _is_int(image) or image < 0:
        raise ProtocolError(f"image must be the index (an integer >= 0) of the image the view shows, got {image!r}")
    return image


def _site(content: dict) -> str:
    site = content.get("site")
    if site not in SITES:
        raise ProtocolError(f"unknown site {site!r}: choose one of {', '.join(SITES)}")
    return site


def _metric(content: dict) -> str:
    metric = content.get("metric")
    if metric not in METRICS:
        raise ProtocolError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    return metric


def _classes(content: dict, limits: Limits) -> tuple[int, ...]:
    classes = content.get("classes")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES_PER_REQUEST:
        raise ProtocolError(f"classes must be a list of 1..{MAX_CLASSES_PER_REQUEST} class indices")
    for c in classes:
        if not _is_int(c) or not 0 <= c < limits.num_classes:
            raise ProtocolError(f"class {c!r} is out of range 0..{limits.num_classes - 1}")
    return tuple(classes)
