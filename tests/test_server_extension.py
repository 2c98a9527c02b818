"""The TCP_NODELAY server extension: registered, switchable, and really sets the socket option."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

import vitlens_widgets_server as ext


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
