"""A tiny jupyter_server extension for quick widget round trips on kernel websockets.

* **TCP_NODELAY.** Widget round trips (view -> kernel -> view) are small messages. Tornado
  does not disable Nagle's algorithm on websockets, so each small reply can wait for the
  browser's delayed ACK (~40 ms). Setting TCP_NODELAY when a kernel websocket opens removes
  that wait.
* **Quiet requests** (:mod:`vitlens_widgets_server.quiet`): the kernel's ``busy`` status of a
  widget's data request marked ``"quiet": true`` is kept from the page, so JupyterLab does not
  redraw its kernel indicators twice per request.

It knows nothing of the engine and imports nothing heavy. Enabled on install
(``jupyter_server_config.d/vitlens_widgets_server.json``). Turn it off with
``jupyter server extension disable vitlens_widgets_server``, or one part of it by starting the
server with ``VITLENS_TCP_NODELAY=0`` or ``VITLENS_QUIET_REQUESTS=0`` in its environment.
"""

from __future__ import annotations

import os
from typing import Any

_PATCHED = "_vitlens_nodelay"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "vitlens_widgets_server"}]


def enabled(variable: str = "VITLENS_TCP_NODELAY") -> bool:
    """Whether the part switched by environment ``variable`` is on (it is unless set to 0/false/no/off)."""
    return os.environ.get(variable, "1").lower() not in ("0", "false", "no", "off")


def _load_jupyter_server_extension(serverapp: Any) -> None:
    if enabled("VITLENS_TCP_NODELAY"):
        install_nodelay()
        serverapp.log.info("vitlens_widgets_server: TCP_NODELAY set on kernel websockets")
    else:
        serverapp.log.info("vitlens_widgets_server: TCP_NODELAY left off (VITLENS_TCP_NODELAY=0)")
    if not enabled("VITLENS_QUIET_REQUESTS"):
        serverapp.log.info("vitlens_widgets_server: quiet requests left off (VITLENS_QUIET_REQUESTS=0)")
    elif install_quiet() is None:
        serverapp.log.warning("vitlens_widgets_server: this jupyter_server has no connection class for quiet requests")
    else:
        serverapp.log.info("vitlens_widgets_server: quiet widget requests keep their busy status from the page")


def install_quiet() -> bool | None:
    """Install :mod:`.quiet`; None where this jupyter_server has no connection class to patch."""
    from .quiet import install_quiet as install

    try:
        return install()
    except (ImportError, AttributeError):
        return None


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
