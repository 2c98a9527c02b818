"""A tiny jupyter_server extension: TCP_NODELAY on kernel websockets.

Widget round trips (view -> kernel -> view) are small messages. Tornado does not
disable Nagle's algorithm on websockets, so each small reply can wait for the
browser's delayed ACK (~40 ms). Setting TCP_NODELAY when a kernel websocket
opens removes that wait. It knows nothing of the engine and imports nothing heavy.

Enabled on install (``jupyter_server_config.d/vitlens_widgets_server.json``).
Turn it off with ``jupyter server extension disable vitlens_widgets_server`` or by
starting the server with ``VITLENS_TCP_NODELAY=0`` in its environment.
"""

from __future__ import annotations

import os
from typing import Any

_PATCHED = "_vitlens_nodelay"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "vitlens_widgets_server"}]


def enabled() -> bool:
    return os.environ.get("VITLENS_TCP_NODELAY", "1").lower() not in ("0", "false", "no", "off")


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if not enabled():
        serverapp.log.info("vitlens_widgets_server: TCP_NODELAY left off (VITLENS_TCP_NODELAY=0)")
        return
    install_nodelay()
    serverapp.log.info("vitlens_widgets_server: TCP_NODELAY set on kernel websockets")


def install_nodelay() -> bool:
    """Make kernel websockets set TCP_NODELAY when they open; returns False if already installed."""
    from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

    if getattr(KernelWebsocketHandler, _PATCHED, False):
        return False
    original_open = KernelWebsocketHandler.open

    async def open_with_nodelay(self, *args: Any, **kwargs: Any) -> Any:
        self.set_nodelay(True)
        return await original_open(self, *args, **kwargs)

    KernelWebsocketHandler.open = open_with_nodelay  # type: ignore[method-assign]
    setattr(KernelWebsocketHandler, _PATCHED, True)
    return True
