"""The bundled demo model: a small ViT trained on procedural textured shapes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from timm.models.vision_transformer import VisionTransformer

from .model import WEIGHTS_PATH, build_demo_model


def load_demo_model(weights: str | os.PathLike | None = None) -> VisionTransformer:
    """The trained demo ViT, read from the safetensors file shipped in the package (no network).

    ``weights``: another file written by ``python -m vitlens_widgets.demo.train``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"no demo weights at {path}; reinstall vitlens-widgets, or retrain them with: "
            f"python -m vitlens_widgets.demo.train --out {WEIGHTS_PATH}"
        )
    with safe_open(str(path), framework="pt") as f:
        architecture = json.loads(f.metadata()["architecture"])
    model = build_demo_model(**architecture)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.eval()


__all__ = ["WEIGHTS_PATH", "build_demo_model", "load_demo_model"]
