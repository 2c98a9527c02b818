"""Creating timm models and loading their weights safely (local files or the hub)."""

from __future__ import annotations

import contextlib
import difflib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

HUB_PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (offline, or the hub is unreachable).

    Example:
        >>> try:
        ...     lens = vl.Lens.from_timm("vit_base_patch16_224")
        ... except vl.WeightsUnavailableError:
        ...     lens = vl.Lens.demo()  # offline: fall back to the bundled model
    """


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. Wrapped state dicts (``{"state_dict": ...}``
    or ``{"model": ...}``) and DataParallel ``module.`` prefixes are unwrapped.

    Example:
        >>> model = timm.create_model("vit_base_patch16_224", pretrained=False)
        >>> model.load_state_dict(load_state_dict("weights.safetensors"))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError and friends
            raise ValueError(
                f"could not read {path} as a weights-only checkpoint ({err.__class__.__name__}: {err}). "
                "Only tensors are loaded, never pickled objects; save with torch.save(model.state_dict(), path) "
                "or as .safetensors."
            ) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def create_model(
    name: str,
    *,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model with hub weights, local weights, or random weights.

    With ``checkpoint_path`` the architecture comes from timm and the weights from
    the file (``num_classes`` is read off the checkpoint's head when not given).
    """
    import timm

    if not timm.is_model(name.split(".")[0]) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.7)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"timm has no model called {name!r}.{hint}")
    if checkpoint_path is not None:
        state = load_state_dict(checkpoint_path)
        if "num_classes" not in kwargs and isinstance(state.get("head.weight"), torch.Tensor):
            kwargs["num_classes"] = state["head.weight"].shape[0]
        model = timm.create_model(name, pretrained=False, **kwargs)
        _load_strict(model, state, checkpoint_path)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    return _create_from_hub(name, **kwargs)


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected keys (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise ValueError(f"checkpoint {path} does not match the architecture: {'; '.join(problems)}")


def _create_from_hub(name: str, **kwargs: Any) -> nn.Module:
    import timm

    offline_hint = (
        f"Pretrained weights for {name!r} could not be loaded: {{why}}. To work offline, download the weights "
        f"once on a machine with internet (e.g. timm.create_model({name!r}, pretrained=True) and "
        "torch.save(model.state_dict(), 'weights.pth'), or the hub's model.safetensors), copy the file over and "
        f"use Lens.from_timm({name!r}, checkpoint_path='weights.pth'). "
        "Or use the bundled demo model: Lens.demo()."
    )
    offline = _hub_offline() or not _hub_reachable()
    if offline and not _weights_cached(name):
        raise WeightsUnavailableError(
            offline_hint.format(why="the hub is not reachable and the weights are not cached")
        )
    try:
        with _hub_offline_mode(offline):
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:
        raise WeightsUnavailableError(offline_hint.format(why=f"{type(err).__name__}: {err}")) from err


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _hub_offline_mode(offline: bool) -> Iterator[None]:
    """Serve from the local cache only (no retries against an unreachable hub) for the duration."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _weights_cached(name: str) -> bool:
    """Whether the hub weights of ``name`` are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    files = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in files)


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe of the hub endpoint, so that offline machines fail in seconds, not minutes."""
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if not host:
        return True
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
