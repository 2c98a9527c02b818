"""The server extension: registered, switchable, really sets TCP_NODELAY, and keeps quiet requests'
busy status from the page (through a real server, kernel and websocket)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path

import pytest
from browser.jupyter import running_lab, ws_message
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from tornado.websocket import websocket_connect

import vitlens_widgets_server as ext
from vitlens_widgets_server import quiet


class StubHandler:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_nodelay(self, value: bool) -> None:
        self.calls.append(f"nodelay={value}")


def test_extension_point_and_config_file_name_the_module():
    assert ext._jupyter_server_extension_points() == [{"module": "vitlens_widgets_server"}]
    config = Path(__file__).parents[1] / "jupyter-config/jupyter_server_config.d/vitlens_widgets_server.json"
    assert json.loads(config.read_text())["ServerApp"]["jpserver_extensions"] == {"vitlens_widgets_server": True}


def test_kernel_websockets_set_nodelay_before_opening(monkeypatch):
    async def original_open(self, kernel_id):
        self.calls.append(f"open {kernel_id}")

    monkeypatch.setattr(KernelWebsocketHandler, "open", original_open)
    monkeypatch.delattr(KernelWebsocketHandler, ext._PATCHED, raising=False)
    assert ext.install_nodelay() is True
    assert ext.install_nodelay() is False  # idempotent
    handler = StubHandler()
    asyncio.run(KernelWebsocketHandler.open(handler, "k1"))
    assert handler.calls == ["nodelay=True", "open k1"]


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("off", False), ("1", True), (None, True)])
def test_environment_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("VITLENS_TCP_NODELAY", raising=False)
    else:
        monkeypatch.setenv("VITLENS_TCP_NODELAY", value)
    assert ext.enabled() is expected


# --- quiet requests, through a real server, kernel and websocket -----------------------------------------

V1 = "v1.kernel.websocket.jupyter.org"


def _message(msg_type: str, content: dict) -> dict:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": "test",
        "username": "test",
        "date": "2026-01-01T00:00:00Z",
        "version": "5.3",
    }
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


def _encode(msg: dict, subprotocol: str | None) -> str | bytes:
    if subprotocol == V1:
        parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
        return serialize_msg_to_ws_v1(parts, msg["channel"])
    return json.dumps(msg)


async def _statuses_of_comm_messages(lab, subprotocol: str | None) -> dict[str, list[str]]:
    """Send a quiet and a plain custom comm message; the iopub statuses the page gets for each."""
    request = urllib.request.Request(f"{lab.base}/api/kernels?token={lab.token}", data=b"{}", method="POST")
    kernel = json.loads(urllib.request.urlopen(request, timeout=30).read())
    url = f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel['id']}/channels?token={lab.token}&session_id=t"
    ws = await websocket_connect(url, subprotocols=[subprotocol] if subprotocol else None)
    info = _message("kernel_info_request", {})
    ws.write_message(_encode(info, subprotocol), binary=subprotocol == V1)
    while (msg := ws_message(await ws.read_message()))["header"]["msg_type"] != "kernel_info_reply":
        pass
    sent = {}
    for name, custom in (("quiet", {"kind": "ping", "id": 1, "quiet": True}), ("plain", {"kind": "ping", "id": 2})):
        msg = _message("comm_msg", {"comm_id": "no-such-comm", "data": {"method": "custom", "content": custom}})
        sent[msg["header"]["msg_id"]] = name
        ws.write_message(_encode(msg, subprotocol), binary=subprotocol == V1)
    seen: dict[str, list[str]] = {"quiet": [], "plain": []}
    while not all(states[-1:] == ["idle"] for states in seen.values()):
        msg = ws_message(await asyncio.wait_for(ws.read_message(), 30))
        name = sent.get(msg["parent_header"].get("msg_id"))
        if name and msg["header"]["msg_type"] == "status":
            seen[name].append(msg["content"]["execution_state"])
    ws.close()
    return seen


@pytest.mark.parametrize("subprotocol", [V1, None], ids=["v1", "json"])
@pytest.mark.parametrize("switch", ["1", "0"], ids=["on", "off"])
def test_a_quiet_requests_busy_status_never_reaches_the_page(tmp_path, monkeypatch, subprotocol, switch):
    """A custom widget message marked quiet gets only its idle status (the page's status never changes);
    any other message, and every message with VITLENS_QUIET_REQUESTS=0, gets busy and idle."""
    monkeypatch.setenv("VITLENS_QUIET_REQUESTS", switch)
    with running_lab(tmp_path) as lab:
        seen = asyncio.run(_statuses_of_comm_messages(lab, subprotocol))
    assert seen["plain"] == ["busy", "idle"]
    assert seen["quiet"] == (["idle"] if switch == "1" else ["busy", "idle"])


def test_explorer_requests_carry_the_quiet_mark():
    """The view marks its requests with the very field the server extension looks for."""
    protocol = (Path(__file__).parents[1] / "js" / "protocol.ts").read_text()
    source = (Path(__file__).parents[1] / "js" / "source.ts").read_text()
    assert f"export type Sent = Request & {{ {quiet.QUIET_FIELD}: true }};" in protocol
    assert f"{quiet.QUIET_FIELD}: true }} as Sent" in source
