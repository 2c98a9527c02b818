"""The bundled demo model: a small ViT trained on procedural textured shapes."""

from __future__ import annotations

import json

from timm.models.vision_transformer import VisionTransformer

from .model import WEIGHTS_PATH, build_demo_model


def load_demo_model() -> VisionTransformer:
    """The trained demo ViT, read from the safetensors file shipped in the package (no network)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(
            f"the demo weights are missing from the installed package ({WEIGHTS_PATH}); reinstall vitlens-widgets, "
            "or retrain them with: python -m vitlens_widgets.demo.train --out " + str(WEIGHTS_PATH)
        )
    with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
        architecture = json.loads(f.metadata()["architecture"])
    model = build_demo_model(**architecture)
    state = {k: v.float() for k, v in load_file(str(WEIGHTS_PATH)).items()}
    model.load_state_dict(state)
    return model.eval()


__all__ = ["WEIGHTS_PATH", "build_demo_model", "load_demo_model"]
