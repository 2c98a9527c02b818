"""The explorer's two halves agree: the traits and the protocol as the TypeScript declares them
(``js/model.ts``, ``js/protocol.ts``, ``js/explorer.ts``) against the Python widget and service."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import vitlens_widgets as vl
from vitlens_widgets.widgets.explorer import EXPLORER_TRAITS
from vitlens_widgets.widgets.protocol import LogitsRequest, MemoriesRequest, Ping, SlicesRequest, StateRequest
from vitlens_widgets.widgets.service import ExplorerService

JS = Path(__file__).resolve().parents[1] / "js"
FIELD = re.compile(r"^\s*(\w+)\??:", re.M)


def block(source: str, start: str) -> str:
    """The code (comments dropped) from ``start`` to the end of its braces or of the type (``;`` at depth 0)."""
    source = re.sub(r"//[^\n]*", "", source)
    at = source.index(start) + len(start)
    depth = 0
    for i, char in enumerate(source[at:], at):
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        if depth < 0 or (depth == 0 and char == ";" and not start.endswith("{")):
            return source[at:i]
    raise AssertionError(f"no end after {start!r}")


def variants(union: str) -> dict[str, set[str]]:
    """kind -> field names of each member of a discriminated union (``About`` spelled out)."""
    about = set(FIELD.findall(block((JS / "protocol.ts").read_text(), "interface About {")))
    out = {}
    for member in re.split(r"\n\s*\|\s*", union):
        kind = re.search(r'kind: "(\w+)"', member)
        if kind:
            fields = set(re.findall(r"(\w+)\??:", member)) | (about if "About &" in member else set())
            out[kind[1]] = fields
    return out


def test_the_views_traits_are_the_widgets():
    declared = set(FIELD.findall(block((JS / "model.ts").read_text(), "export interface Traits {")))
    listened = set(re.findall(r'"(\w+)"', block((JS / "explorer.ts").read_text(), "const TRAITS: (keyof Traits)[] =")))
    assert declared == set(EXPLORER_TRAITS)
    assert listened == declared, "the view redraws on every trait"


def test_requests_have_the_same_fields_on_both_sides():
    declared = variants(block((JS / "protocol.ts").read_text(), "export type Request ="))
    python = {
        "ping": Ping,
        "state": StateRequest,
        "slices": SlicesRequest,
        "logits": LogitsRequest,
        "memories": MemoriesRequest,
    }
    assert declared.keys() == python.keys()
    for kind, request in python.items():
        assert declared[kind] == {"kind"} | {f.name for f in dataclasses.fields(request)}, kind


@pytest.fixture(scope="module")
def service() -> ExplorerService:
    lens = vl.Lens.demo()
    service = ExplorerService(lens)
    service.show(lens.trace(vl.data.shapes(1, seed=2).images[0]), image=0, version=1)
    return service


def test_replies_have_the_fields_the_view_declares(service):
    declared = variants(block((JS / "protocol.ts").read_text(), "export type Reply ="))
    explorer = vl.explore(service.lens, vl.data.shapes(1, seed=2).images)  # it answers `state` itself
    asked = {
        "pong": {"kind": "ping", "id": 1},
        "state": {"kind": "state", "id": 6, "state": {"layer": 2}},
        "slices": {"kind": "slices", "id": 2, "image": 0, "site": "mlp", "metric": "logit", "classes": [1]},
        "logits": {"kind": "logits", "id": 3, "image": 0, "site": "attn", "start": 0, "stop": 1},
        "memories": {"kind": "memories", "id": 4, "image": 0, "site": "mlp", "layer": 1, "token": 3},
        "error": {"kind": "slices", "id": 5, "image": 9, "site": "mlp", "metric": "logit", "classes": [1]},
    }
    assert declared.keys() == asked.keys()
    for kind, request in asked.items():
        header = explorer._take_state(request) if kind == "state" else service.answer(request)[0]
        assert header["kind"] == kind and set(header) == declared[kind], kind
