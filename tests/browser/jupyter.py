"""Real JupyterLab + real Chromium for browser tests: start a server on loopback, open notebooks."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# The static snapshot (a PNG output) that follows an explorer's widget output in a Jupyter page.
SNAPSHOT = ".jp-OutputArea-child:has(.vl-explorer) + .jp-OutputArea-child .jp-RenderedImage img"
# The heat map's pixels as shown, RGBA row-major, from its canvas element: the canvas's own while it
# shows (just after a new slice), else the band of the every-layer image that its object-position
# picks (js/heat.ts).
SHOWN_HEAT_PIXELS = """canvas => {
  const sprite = canvas.parentElement.querySelector('img.vl-heat-sprite');
  if (!canvas.hidden || !sprite || sprite.hidden) {
    return Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data);
  }
  const bands = sprite.naturalHeight / canvas.height;
  const percent = parseFloat(getComputedStyle(sprite).objectPosition.split(' ')[1]);
  const band = Math.round((percent / 100) * (bands - 1));
  const copy = Object.assign(document.createElement('canvas'), {width: sprite.naturalWidth, height: sprite.naturalHeight});
  const context = copy.getContext('2d');
  context.drawImage(sprite, 0, 0);
  return Array.from(context.getImageData(0, band * canvas.height, canvas.width, canvas.height).data);
}"""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving ``root``; stopped on exit."""

    def __init__(self, root: Path, extra_args: list[str] | None = None):
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        self.log = root / "jupyterlab.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}&reset"

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTER_PLATFORM_DIRS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--ServerApp.port={self.port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.open_browser=False",
            "--allow-root",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2),
            ):
                return
            time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not start in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def ws_message(payload: str | bytes) -> dict:
    """A kernel websocket frame as a message dict: the v1 binary protocol (JupyterLab's) or JSON."""
    if isinstance(payload, str):
        return json.loads(payload)
    from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

    channel, parts = deserialize_msg_from_ws_v1(payload)
    header, parent, metadata, content = (json.loads(part) for part in parts[:4])
    return {"channel": channel, "header": header, "parent_header": parent, "metadata": metadata, "content": content}


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


@contextlib.contextmanager
def running_lab(root: Path, extra_args: list[str] | None = None) -> Iterator[JupyterLab]:
    lab = JupyterLab(root, extra_args)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def chromium_available() -> bool:
    return Path(CHROMIUM).exists()
