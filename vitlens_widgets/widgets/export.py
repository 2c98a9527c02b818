"""``export_html``: a self-contained interactive explorer page (no kernel, no CDN)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..engine.lens import Lens
from ..engine.preprocess import ImageLike
from ..engine.trace import SITES, Trace
from .payload import layout_dict, metric_slices, png_bytes, prefetch_classes, token_topk
from .specs import METRICS, STATIC, view_specs

SMALL_MODEL_CLASSES = 64  # up to this many classes, every class is exported
LARGE_MODEL_CLASSES = 16  # otherwise, the prediction and the top alternatives


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def image_payload(trace: Trace, classes: Sequence[int]) -> dict:
    """Everything the page's static data source needs for one image: slices as float16, top-k tables, the crop."""
    slices = {}
    for site in SITES:
        for metric in METRICS:
            data = metric_slices(trace, site, metric, classes).astype(np.float16)
            slices[f"{site}|{metric}"] = _b64(data.view(np.uint16))
    topk = {}
    for site in SITES:
        indices, probs = token_topk(trace, site)
        topk[site] = {"indices": _b64(indices), "probs": _b64(probs), "k": int(indices.shape[-1])}
    return {
        "layout": layout_dict(trace),
        "png": base64.b64encode(png_bytes(trace.image)).decode("ascii"),
        "prediction": trace.prediction.index,
        "classes": [int(c) for c in classes],
        "slices": slices,
        "topk": topk,
    }


def export_html(
    lens: Lens,
    images: ImageLike | Sequence[ImageLike],
    path: str | os.PathLike,
    max_classes: int | None = None,
    title: str = "vitlens explorer",
) -> int:
    """Write an interactive explorer page with the bundle and precomputed slices inlined; returns bytes written.

    Models with at most 64 classes export every class; larger ones export the
    ``max_classes`` (default 16) most relevant classes per image (the prediction
    and the top classes of [CLS] at the last layer of each site), as float16.

    Example:
        >>> vl.export_html(vl.Lens.demo(), vl.data.shapes(3, seed=2).images, "explorer.html")
    """
    from .explorer import check_gallery

    gallery = check_gallery(lens, images)
    if max_classes is None:
        max_classes = SMALL_MODEL_CLASSES if lens.num_classes <= SMALL_MODEL_CLASSES else LARGE_MODEL_CLASSES
    payloads = []
    for image in gallery:
        trace = lens.trace(image)
        payloads.append(image_payload(trace, prefetch_classes(trace, limit=max_classes)))
    data = {
        "specs": view_specs(lens.depth),
        "initial": _opening_state(lens),
        "class_names": [lens.class_names.short(i) for i in range(lens.num_classes)],
        "images": payloads,
        "complete": max_classes >= lens.num_classes,
    }
    page = _page(title, json.dumps(data, separators=(",", ":")))
    Path(path).write_text(page, encoding="utf-8")
    return len(page.encode("utf-8"))


def _opening_state(lens: Lens) -> dict:
    """The site, metric and layer an explorer widget opens on, so the page opens on the same."""
    from .explorer import Explorer

    traits = Explorer.class_traits()
    return {"site": traits["site"].default_value, "metric": traits["metric"].default_value, "layer": lens.depth}


def inline_json(data_json: str) -> str:
    """JSON safe inside a ``<script>`` element: every ``<`` (so no ``</script``, ``<!--``) and the
    JavaScript line separators U+2028/U+2029 escaped; ``JSON.parse`` reads back the same text."""
    return data_json.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _page(title: str, data_json: str) -> str:
    # The bundle travels as a data: URL, so no character of the code can end or confuse the script element.
    script = base64.b64encode((STATIC / "standalone.js").read_bytes()).decode("ascii")
    styles = (STATIC / "explorer.css").read_text(encoding="utf-8")
    if "<" in styles:
        raise RuntimeError("explorer.css must not contain '<': it is inlined in a <style> element")
    safe_json = inline_json(data_json)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_escape(title)}</title>
<style>
body {{ margin: 16px; background: #fff; }}
@media (prefers-color-scheme: dark) {{ body {{ background: #111; }} .vl-explorer {{ --jp-layout-color1: #111; --jp-layout-color2: #2a2a2a; --jp-ui-font-color1: #eee; --jp-ui-font-color2: #aaa; --jp-border-color2: #555; }} }}
{styles}
</style>
</head>
<body>
<main id="vitlens-explorer" aria-label="{_escape(title)}"></main>
<script id="vitlens-data" type="application/json">{safe_json}</script>
<script src="data:text/javascript;base64,{script}"></script>
</body>
</html>
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
