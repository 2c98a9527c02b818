"""Creating timm models and loading their weights safely (local files or the hub)."""

from __future__ import annotations

import contextlib
import difflib
import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

HUB_PROBE_TIMEOUT_S = 3.0
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
OTHER_SIZE = "the checkpoint is of another model size (width, heads or MLP ratio): pick the matching model name"


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

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors' SafetensorError: a cut-off file, or not safetensors at all
            raise ValueError(
                f"could not read checkpoint {path} as safetensors ({err}): the file is damaged or truncated "
                "(an interrupted download or copy?), or not a .safetensors file"
            ) from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # weights_only refused a pickled object
            raise ValueError(
                f"could not read {path} as a weights-only checkpoint ({err.__class__.__name__}: {err}). "
                "Only tensors are loaded, never pickled objects; save with torch.save(model.state_dict(), path) "
                "or as .safetensors."
            ) from err
        except Exception as err:  # a cut-off zip archive, or not a torch file
            raise ValueError(
                f"could not read checkpoint {path} ({err.__class__.__name__}: {err}): the file is damaged or "
                "truncated (an interrupted download or copy?), or not a torch checkpoint"
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
    check_model_name(name)
    if checkpoint_path is not None:
        state = load_state_dict(checkpoint_path)
        if "num_classes" not in kwargs and isinstance(state.get("head.weight"), torch.Tensor):
            kwargs["num_classes"] = state["head.weight"].shape[0]
        model = _create(name, pretrained=False, **kwargs)
        load_checked(model, state, checkpoint_path)
        return model
    return _create(name, pretrained=pretrained, **kwargs)


def check_model_name(name: str) -> None:
    """``ValueError`` (with close names) unless timm knows ``name``; ``hf-hub:``/``local-dir:`` names pass to timm."""
    import timm
    from timm.models import parse_model_name

    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string, got {type(name).__name__}")
    try:
        source, _ = parse_model_name(name)
    except ValueError as err:  # e.g. "timm/vit_base_patch16_224": a hub repository without its prefix
        raise ValueError(f"timm has no model called {name!r}: {err}") from err
    if source is not None or timm.is_model(name.split(".")[0]) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.7)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"timm has no model called {name!r}.{hint}")


def _create(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's model; through the hub checks whenever the hub is needed (pretrained weights, or an hf-hub: config)."""
    import timm

    if name.startswith(HUB_PREFIX) or (pretrained and not name.startswith(LOCAL_PREFIX)):
        return _create_from_hub(name, pretrained=pretrained, **kwargs)
    return timm.create_model(name, pretrained=pretrained, **kwargs)  # random weights, or a local-dir: folder


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    """Load ``state`` into ``model``, or raise ``ValueError`` naming missing, unexpected or misshapen tensors."""
    expected = model.state_dict()
    misshapen = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if misshapen:
        first = misshapen[0]
        more = f" (and {len(misshapen) - 1} more: {', '.join(misshapen[1:4])})" if len(misshapen) > 1 else ""
        causes = list(dict.fromkeys(_shape_cause(k) for k in misshapen))
        if OTHER_SIZE in causes:  # a wider or deeper model explains every other mismatch too
            causes = [OTHER_SIZE]
        raise ValueError(
            f"checkpoint {path} does not fit the model: tensor {first!r} is {list(state[first].shape)} in the file, "
            f"the model expects {list(expected[first].shape)}{more}. Likely cause: {'; '.join(causes)}."
        )
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys (e.g. {', '.join(result.missing_keys[:3])})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected keys (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise ValueError(f"checkpoint {path} does not match the architecture: {'; '.join(problems)}")


def _shape_cause(key: str) -> str:
    if key.startswith(("head.", "head_dist.")):
        return "the checkpoint has another number of classes (leave num_classes unset to read it off the file)"
    if key in ("pos_embed", "rope") or key.startswith("pos_embed"):
        return "the checkpoint was trained at another image or patch size (pass img_size=... to match it)"
    if key.startswith("patch_embed."):
        return "another patch size or number of input channels (patch_size=..., in_chans=...)"
    return OTHER_SIZE


def _create_from_hub(name: str, pretrained: bool = True, **kwargs: Any) -> nn.Module:
    import timm

    hub_name_hint = (
        " An hf-hub: name also needs the repository's config.json: offline, pass the timm architecture it names "
        "(e.g. 'vit_base_patch16_224') with checkpoint_path instead."
        if name.startswith(HUB_PREFIX)
        else ""
    )
    offline_hint = (
        f"Pretrained weights for {name!r} could not be loaded: {{why}}. To work offline, download the weights "
        f"once on a machine with internet (e.g. timm.create_model({name!r}, pretrained=True) and "
        "torch.save(model.state_dict(), 'weights.pth'), or the hub's model.safetensors), copy the file over and "
        f"use Lens.from_timm({name!r}, checkpoint_path='weights.pth'). "
        f"Or use the bundled demo model: Lens.demo().{hub_name_hint}"
    )
    offline = _hub_offline() or not _hub_reachable()
    if offline and not _hub_files_cached(name, weights=pretrained):
        raise WeightsUnavailableError(offline_hint.format(why="the hub is not reachable and the files are not cached"))
    try:
        with _hub_offline_mode(offline):
            return timm.create_model(name, pretrained=pretrained, **kwargs)
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


def _hub_files_cached(name: str, weights: bool = True) -> bool:
    """Whether the hub files ``name`` needs (its weights; for ``hf-hub:`` names also config.json) are cached."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    if name.startswith(HUB_PREFIX):
        hub_id, _, revision = name.removeprefix(HUB_PREFIX).partition("@")
        needed = [("config.json",)]
    else:
        cfg = get_pretrained_cfg(name)
        hub_id, revision = (getattr(cfg, "hf_hub_id", None) if cfg is not None else None), ""
        needed = []
    if not hub_id:
        return False
    if weights:
        needed.append(("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(hub_id, filename, revision=revision or None), str)

    return all(any(cached(f) for f in alternatives) for alternatives in needed)


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
