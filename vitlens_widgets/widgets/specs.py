"""The explorer's vocabulary, defined once: sites, metrics, layers and colours.

The view does not restate any of this: :func:`view_specs` sends it as data (the
``specs`` trait), and the snapshot and the bqplot trajectories read the same
descriptors. Colours are :data:`PALETTE`, read from ``static/palette.json``, which
the view bundles when it is built. Adding a metric is one :class:`MetricSpec`
here, its maths in :func:`~vitlens_widgets.widgets.payload.metric_slices` and in
``js/metrics.ts``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..engine.trace import SITES, layer_numbers, layer_row

STATIC = Path(__file__).resolve().parent.parent / "static"  # the built front end, its styles and the palette

PALETTE: dict[str, Any] = json.loads((STATIC / "palette.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class SiteSpec:
    """Where hidden states are read, and how its layers are numbered and named."""

    name: str
    label: str
    layer_label: str  # how layer b reads, e.g. "after block {layer}"
    memories: Literal["attn", "mlp"]  # whose key-value memories the hover panel shows at this site
    zero_label: str | None = None  # the name of layer 0 when the site has one

    def layers(self, depth: int) -> range:
        return layer_numbers(self.name, depth)

    def check_layer(self, layer: int, depth: int) -> int:
        """``layer`` when it is a layer of this site (``ValueError`` naming the valid range otherwise)."""
        layer_row(self.name, layer, depth)
        return int(layer)

    def describe(self, layer: int, depth: int) -> str:
        if layer == 0 and self.zero_label:
            return f"0 · {self.zero_label}"
        return f"{layer} / {depth} · {self.layer_label.format(layer=layer)}"


@dataclass(frozen=True)
class MetricSpec:
    """What a number in a slice means, its range and colour scale."""

    name: str
    label: str
    scale: Literal["sequential", "diverging"]
    value_range: tuple[float, float] | None  # None: symmetric around 0, from the data shown
    ranked: bool = False  # computed from each token's ranking of all classes (a rank index speeds it up)


SITE_SPECS: dict[str, SiteSpec] = {
    "resid": SiteSpec("resid", "residual stream", "after block {layer}", "mlp", zero_label="embeddings"),
    "attn": SiteSpec("attn", "attention", "attention of block {layer}", "attn"),
    "mlp": SiteSpec("mlp", "MLP", "MLP of block {layer}", "mlp"),
}
assert tuple(SITE_SPECS) == SITES, "one descriptor per engine site"

METRIC_SPECS: dict[str, MetricSpec] = {
    "identifiability": MetricSpec("identifiability", "identifiability", "sequential", (0.0, 1.0), ranked=True),
    "probability": MetricSpec("probability", "probability", "sequential", (0.0, 1.0)),
    "logit": MetricSpec("logit", "logit", "diverging", None),
}
METRICS: tuple[str, ...] = tuple(METRIC_SPECS)

ATTENTION_OPTIONS: dict[str, str] = {
    "": "full",
    "self_only": "image tokens see only themselves",
    "no_cls": "image tokens ignore [CLS]",
}


def site_spec(site: str) -> SiteSpec:
    if site not in SITE_SPECS:
        raise ValueError(f"unknown site {site!r}: choose one of {', '.join(repr(s) for s in SITE_SPECS)}")
    return SITE_SPECS[site]


def check_metric(metric: str) -> str:
    if metric not in METRIC_SPECS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(repr(m) for m in METRIC_SPECS)}")
    return metric


def view_specs(
    depth: int, relevance_methods: tuple[str, ...] = (), signed_relevance: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Everything the view needs to label, number and colour what it draws, as JSON."""
    return {
        "sites": [
            {
                "name": s.name,
                "label": s.label,
                "layers": list(s.layers(depth)),
                "layer_labels": [s.describe(b, depth) for b in s.layers(depth)],
                "memories": s.memories,
            }
            for s in SITE_SPECS.values()
        ],
        "metrics": [
            {
                "name": m.name,
                "label": m.label,
                "scale": m.scale,
                "range": None if m.value_range is None else list(m.value_range),
            }
            for m in METRIC_SPECS.values()
        ],
        "attention": [{"name": k, "label": v} for k, v in ATTENTION_OPTIONS.items()],
        "relevance": [
            {"name": "", "label": "off"},
            *({"name": m, "label": m.replace("_", " "), "signed": m in signed_relevance} for m in relevance_methods),
        ],
    }
