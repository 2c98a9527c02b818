"""Quiet requests: a widget's data requests do not flash the kernel's busy status in the page.

Every message a kernel handles makes it publish ``busy`` then ``idle``. JupyterLab redraws its
kernel indicators on each change (the notebook toolbar's execution indicator, whose toolbar then
re-measures every button; the busy favicon), 3-8 ms of the page's time per round trip, spent
between a widget's request and the frame that shows the answer.

A custom widget message whose content carries ``"quiet": true`` (the explorer marks its ``ping``,
``slices``, ``logits`` and ``memories`` requests so, never its trait changes, which may retrace
the model) has its kernel ``busy`` status kept from the page. Its ``idle`` status still goes
through: the page's status was idle and stays idle (no change, nothing redrawn), and the page's
bookkeeping of the message, which waits for that idle, completes as before. The server's own
activity tracking (idle culling) reads the kernel directly and is not affected.

Only the default ``ZMQChannelsWebsocketConnection`` is patched; anything unexpected in a message
leaves it untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from typing import Any

QUIET_FIELD = "quiet"
_MARKER = f'"{QUIET_FIELD}"'.encode()
_V1 = "v1.kernel.websocket.jupyter.org"
_REMEMBERED = 4096  # quiet request ids kept (their busy status follows within milliseconds)
_PATCHED = "_vitlens_quiet"

_quiet_ids: OrderedDict[str, None] = OrderedDict()


def is_quiet(header: dict[str, Any], content: dict[str, Any]) -> bool:
    """Whether a client message is a widget's custom message marked quiet."""
    if header.get("msg_type") != "comm_msg":
        return False
    data = content.get("data")
    if not isinstance(data, dict) or data.get("method") != "custom":
        return False
    custom = data.get("content")
    return isinstance(custom, dict) and custom.get(QUIET_FIELD) is True


def remember(msg_id: str) -> None:
    _quiet_ids[msg_id] = None
    while len(_quiet_ids) > _REMEMBERED:
        _quiet_ids.popitem(last=False)


def note_incoming(subprotocol: str | None, ws_msg: Any) -> None:
    """Remember the id of a quiet request the page sends to the kernel (v1 or JSON websocket protocol)."""
    from jupyter_server.services.kernels.connection.base import (
        deserialize_binary_message,
        deserialize_msg_from_ws_v1,
    )

    marker = _MARKER.decode() if isinstance(ws_msg, str) else _MARKER
    if marker not in ws_msg:  # most messages: not even parsed
        return
    if subprotocol == _V1:
        channel, parts = deserialize_msg_from_ws_v1(ws_msg)
        if channel != "shell" or len(parts) < 4:
            return
        header, content = json.loads(bytes(parts[0])), json.loads(bytes(parts[3]))
    else:
        msg = json.loads(ws_msg) if isinstance(ws_msg, str) else deserialize_binary_message(ws_msg)
        if msg.get("channel") != "shell":
            return
        header, content = msg.get("header") or {}, msg.get("content") or {}
    if is_quiet(header, content):
        remember(header["msg_id"])


def is_quiet_busy(session: Any, channel: str | None, msg_list: list[Any]) -> bool:
    """Whether a kernel message is the ``busy`` status of a quiet request."""
    if channel != "iopub" or not _quiet_ids:
        return False
    _, parts = session.feed_identities(msg_list)
    if len(parts) < 5 or b"status" not in bytes(parts[1]):  # [signature, header, parent, metadata, content]
        return False
    if session.unpack(bytes(parts[1])).get("msg_type") != "status":
        return False
    parent = session.unpack(bytes(parts[2]))
    if parent.get("msg_id") not in _quiet_ids:
        return False
    return session.unpack(bytes(parts[4])).get("execution_state") == "busy"


def install_quiet() -> bool:
    """Patch the kernel websocket connection to keep quiet requests' busy status from the page;
    returns False if already installed."""
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection as Connection

    if getattr(Connection, _PATCHED, False):
        return False
    original_incoming = Connection.handle_incoming_message
    original_outgoing = Connection.handle_outgoing_message

    def handle_incoming_message(self: Any, incoming_msg: Any) -> None:
        with contextlib.suppress(Exception):  # not ours to judge: the original handler reports malformed messages
            note_incoming(getattr(self, "subprotocol", None), incoming_msg)
        return original_incoming(self, incoming_msg)

    def handle_outgoing_message(self: Any, stream: Any, outgoing_msg: list[Any]) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        with contextlib.suppress(Exception):  # anything unexpected goes through untouched
            if is_quiet_busy(self.session, channel, outgoing_msg):
                return None
        return original_outgoing(self, stream, outgoing_msg)

    Connection.handle_incoming_message = handle_incoming_message  # type: ignore[method-assign]
    Connection.handle_outgoing_message = handle_outgoing_message  # type: ignore[method-assign]
    setattr(Connection, _PATCHED, True)
    return True
