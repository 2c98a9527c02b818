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

from .trace import SITES, Trace, layer_numbers

if TYPE_CHECKING:
    from .lens import Lens

FORMAT = "vitlens-traces/1"
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


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

    from .lens import check_images

    items = list(check_images(images))
    for item in tqdm(items, desc="tracing", unit="img", disable=not progress):
        tensor = lens.prepare(item).tensor
        yield tensor, lens.trace(tensor)


def load_traces(lens: Lens, path: str | os.PathLike) -> list[torch.Tensor]:
    """Read traces written by :func:`save_traces` into ``lens`` and return the gallery.

    The gallery is the list of preprocessed inputs; ``lens.trace`` (and so the
    explorer) answers each of them from the loaded traces, with no forward pass.
    Raises ``ValueError`` when the file is not a valid trace file (damaged,
    truncated or edited: the message says what is wrong) or was written for a
    model with other weights.
    """
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"no saved traces at {where!r}; write them with lens.save_traces(images, path)")
    try:
        opened = safe_open(where, framework="pt")
    except Exception as err:  # SafetensorError: cut off, or not safetensors at all
        raise invalid(where, f"it cannot be read as safetensors ({err}); damaged or truncated?") from err
    with opened as file:
        count = _checked_count(where, file.metadata() or {})
        if file.metadata()["model"] != model_fingerprint(lens.model):
            raise ValueError(
                f"{where!r} was traced with a different model (other weights); "
                "re-create it with lens.save_traces(images, path) for this lens"
            )
        _check_tensors(where, file, count, expected_layout(lens))
        gallery = []
        for i in range(count):
            tensor = file.get_tensor(f"{i}.input")
            lens.pin(tensor, _trace_from_file(lens, file, i))
            gallery.append(tensor)
    return gallery


def invalid(path: str, what: str) -> ValueError:
    """The one error for a file :func:`load_traces` cannot use: its path, then what is wrong."""
    return ValueError(f"{path!r} is not a valid trace file: {what}")


def _checked_count(path: str, metadata: dict[str, str]) -> int:
    if metadata.get("format") != FORMAT:
        raise invalid(path, f"its format is {metadata.get('format')!r}, expected {FORMAT!r}")
    if "model" not in metadata:
        raise invalid(path, "its metadata has no model fingerprint")
    count = metadata.get("count", "")
    if not count.isdigit() or int(count) < 1:
        raise invalid(path, f"its image count is {count!r}, expected a positive whole number")
    return int(count)


def expected_layout(lens: Lens) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Per tensor of one image (``"input"``, ``"hidden.resid"``...): its safetensors dtype and shape for ``lens``."""
    height, width = lens.preprocessor.input_size
    depth, tokens, classes = lens.depth, lens.tokens.n_tokens, lens.num_classes
    width_d = int(getattr(lens.model, "embed_dim", 0) or lens.model.num_features)
    layout = {"input": ("F32", (3, height, width)), "image": ("U8", (height, width, 3)), "output": ("F32", (classes,))}
    param = next(lens.model.parameters(), None)
    hidden_dtype = SAFETENSORS_DTYPES.get(param.dtype if param is not None else torch.float32, "F32")
    for site in SITES:
        rows = len(layer_numbers(site, depth))
        layout[f"hidden.{site}"] = (hidden_dtype, (rows, tokens, width_d))
        layout[f"logits.{site}"] = ("F32", (rows, tokens, classes))
    return layout


def _check_tensors(path: str, file: Any, count: int, layout: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Every expected tensor present with its dtype and shape, nothing else; logits finite."""
    expected = {f"{i}.{name}" for i in range(count) for name in layout}
    present = set(file.keys())
    if missing := sorted(expected - present, key=_natural):
        raise invalid(path, f"it says it holds {count} images but lacks {len(missing)} tensors (e.g. {missing[0]!r})")
    if extra := sorted(present - expected, key=_natural):
        raise invalid(path, f"it holds {len(extra)} tensors beyond its {count} images (e.g. {extra[0]!r})")
    for key in sorted(expected, key=_natural):
        dtype, shape = layout[key.split(".", 1)[1]]
        found = file.get_slice(key)
        if (found.get_dtype(), tuple(found.get_shape())) != (dtype, shape):
            raise invalid(
                path,
                f"tensor {key!r} is {found.get_dtype()} {list(found.get_shape())}, expected {dtype} {list(shape)} "
                "for this lens (another number of classes, blocks or tokens?)",
            )
    for i in range(count):
        if not torch.isfinite(file.get_tensor(f"{i}.output")).all():
            raise invalid(path, f"the model output of image {i} holds NaN or infinite values")


def _natural(key: str) -> tuple[int, str]:
    index, _, name = key.partition(".")
    return (int(index), name) if index.isdigit() else (-1, key)


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
