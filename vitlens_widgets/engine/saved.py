"""Traces saved to disk: trace a gallery once, open it in many kernels without a forward pass.

For a course, the instructor runs ``lens.save_traces(images, "gallery.vltrace")``
once; each student kernel calls ``lens.load_traces("gallery.vltrace")`` and gets
the gallery back with every trace (hidden states and projections) already in
memory, so a class of 100 opening the explorer at once does not wait on CPUs.

The file is plain safetensors (no pickles): per image the preprocessed input, the
crop, the model's logits, the hidden states and the class logits of every site,
plus a fingerprint of the model's weights so traces are never shown for the
wrong model.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .trace import SITES, Trace

if TYPE_CHECKING:
    from .lens import Lens

FORMAT = "vitlens-traces/1"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer: two models share it only if their weights are identical."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_traces(lens: Lens, images: Iterable[Any], path: str | os.PathLike, progress: bool = True) -> int:
    """Trace ``images`` and write every trace, projected at every site, to ``path``; returns bytes written."""
    tensors: dict[str, torch.Tensor] = {}
    count = 0
    for i, (tensor, trace) in enumerate(_inputs_and_traces(lens, images, progress)):
        tensors[f"{i}.input"] = tensor.contiguous()
        tensors[f"{i}.image"] = torch.from_numpy(np.ascontiguousarray(trace.image))
        tensors[f"{i}.output"] = torch.from_numpy(trace.output_logits)
        for site in SITES:
            tensors[f"{i}.hidden.{site}"] = trace.hidden[site].detach().cpu().contiguous()
            tensors[f"{i}.logits.{site}"] = torch.from_numpy(trace.logits(site))
        count += 1
    if not count:
        raise ValueError("save_traces needs at least one image")
    metadata = {"format": FORMAT, "count": str(count), "model": model_fingerprint(lens.model)}
    save_file(tensors, os.fspath(path), metadata=metadata)
    return os.path.getsize(path)


def _inputs_and_traces(lens: Lens, images: Iterable[Any], progress: bool):
    from tqdm.auto import tqdm

    items = list(images)
    for item in tqdm(items, desc="tracing", unit="img", disable=not progress):
        tensor = lens.prepare(item).tensor
        yield tensor, lens.trace(tensor)


def load_traces(lens: Lens, path: str | os.PathLike) -> list[torch.Tensor]:
    """Read traces written by :func:`save_traces` into ``lens`` and return the gallery.

    The gallery is the list of preprocessed inputs; ``lens.trace`` (and so the
    explorer) answers each of them from the loaded traces, with no forward pass.
    Raises ``ValueError`` when the file was written for a model with other weights.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no saved traces at {os.fspath(path)!r}; write them with lens.save_traces(images, path)"
        )
    with safe_open(os.fspath(path), framework="pt") as file:
        metadata = file.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not a vitlens traces file (format {metadata.get('format')!r})")
        if metadata["model"] != model_fingerprint(lens.model):
            raise ValueError(
                f"{os.fspath(path)!r} was traced with a different model (other weights); "
                "re-create it with lens.save_traces(images, path) for this lens"
            )
        gallery = []
        for i in range(int(metadata["count"])):
            tensor = file.get_tensor(f"{i}.input")
            lens.pin(tensor, _trace_from_file(lens, file, i))
            gallery.append(tensor)
    return gallery


def _trace_from_file(lens: Lens, file: Any, i: int) -> Trace:
    return Trace(
        hidden={site: file.get_tensor(f"{i}.hidden.{site}") for site in SITES},
        output_logits=file.get_tensor(f"{i}.output").numpy(),
        readout=lens.adapter.readout,
        class_names=lens.class_names,
        tokens=lens.tokens,
        image=file.get_tensor(f"{i}.image").numpy(),
        options={},
        dropped=np.zeros(lens.tokens.n_tokens, dtype=bool),
        _logits={site: file.get_tensor(f"{i}.logits.{site}").numpy() for site in SITES},
    )
