"""The Lens: runs a timm ViT once per image and hands back traces in class embedding space."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .adapters import ModelAdapter, adapter_for
from .classes import ClassLike, ClassNames, default_class_names
from .loading import create_model
from .perturb import Perturbation, attention_mask, make_perturbation, zero_cls_weights
from .preprocess import ImageLike, Prepared, Preprocessor
from .recipe import LensRecipe
from .trace import TokenLayout, Trace, TraceBatch, check_int

NO_PERTURBATION = Perturbation()


class Lens:
    """A view of an image-classification ViT in class embedding space.

    Args:
        model: a supported timm model (see :data:`vitlens_widgets.engine.adapters.SUPPORTED`).
        class_names: one name per class; default: the model's own metadata
            (ImageNet names for ImageNet models), else ``"class i"``.
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); default CPU.
        cache_size: how many recent traces to keep (same image and options: no second forward pass).

    Example:
        >>> lens = Lens.demo()
        >>> trace = lens.trace(vl.data.shapes(1).images[0])
        >>> trace.identifiability(trace.prediction.index, "resid").shape  # [L+1, T]
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        cache_size: int = 8,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Lens needs a torch model (nn.Module), got {type(model).__name__}")
        self.adapter: ModelAdapter = adapter_for(model)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        num_classes = self.adapter.num_classes
        if isinstance(class_names, (str, bytes)):
            raise TypeError("class_names must be a list of names, one per class, not a single string")
        names = list(class_names) if class_names is not None else default_class_names(model, num_classes)
        if len(names) != num_classes:
            raise ValueError(f"got {len(names)} class names for a model with {num_classes} classes")
        self.class_names = ClassNames(names)
        self.preprocessor = Preprocessor(model, input_size=self.adapter.input_size)
        self.tokens = TokenLayout(
            prefix=self.adapter.prefix_names,
            grid=self.adapter.grid_size(self.preprocessor.input_size),
            patch_size=self.adapter.patch_size,
        )
        if check_int(cache_size, "cache_size") < 0:
            raise ValueError("cache_size must be >= 0")
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Trace] = OrderedDict()
        self._cache_lock = threading.Lock()  # widgets may trace from a kernel subshell while a cell traces too
        self._pinned: dict[str, Trace] = {}  # input fingerprint -> unperturbed trace, never evicted
        self.recipe: LensRecipe | None = None  # how to build this lens elsewhere (set by from_timm and demo)

    # --- construction ------------------------------------------------------------
    @classmethod
    def from_timm(
        cls,
        name: str,
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        cache_size: int = 8,
        **model_kwargs: Any,
    ) -> Lens:
        """A lens over a timm model by name.

        Weights come from ``checkpoint_path`` (a local ``.safetensors``/``.pth``
        file, read safely) when given, else from the hub when ``pretrained``
        (which needs internet or a warm cache: offline machines fail within
        seconds with instructions), else random (``pretrained=False``).

        Example:
            >>> lens = Lens.from_timm("vit_base_patch16_224", checkpoint_path="w.safetensors")
        """
        model = create_model(name, pretrained=pretrained, checkpoint_path=checkpoint_path, **model_kwargs)
        lens = cls(model, class_names=class_names, device=device, cache_size=cache_size)
        lens.recipe = LensRecipe.timm(
            name, pretrained=pretrained, checkpoint_path=checkpoint_path, class_names=class_names, **model_kwargs
        )
        return lens

    @classmethod
    def demo(cls, device: str | torch.device = "cpu") -> Lens:
        """The bundled demo ViT (textured shapes, 10 classes), loaded offline.

        Example:
            >>> lens = Lens.demo()
            >>> lens.class_names[0]
            'circle'
        """
        from ..demo import load_demo_model

        lens = cls(load_demo_model(), device=device)
        lens.recipe = LensRecipe("demo")
        return lens

    # --- shape of the model ------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of transformer blocks ``L``."""
        return self.adapter.depth

    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` the head predicts."""
        return len(self.class_names)

    def class_index(self, cls: ClassLike) -> int:
        """Resolve a class index or name (``ValueError`` with suggestions when unknown).

        Example:
            >>> lens.class_index("star")
            3
        """
        return self.class_names.index(cls)

    def __repr__(self) -> str:
        return (
            f"Lens({type(self.model).__name__}, family={self.adapter.family!r}, blocks={self.depth}, "
            f"tokens={self.tokens.n_tokens} ({'+'.join(self.tokens.prefix) or 'no prefix'} + "
            f"{self.tokens.grid[0]}x{self.tokens.grid[1]} patches), classes={self.num_classes}, device={self.device})"
        )

    # --- tracing -----------------------------------------------------------------
    def prepare(self, image: ImageLike) -> Prepared:
        """Preprocess one image exactly as the model expects (see :class:`Preprocessor`).

        Example:
            >>> prepared = lens.prepare(vl.data.shapes(1).images[0])
            >>> prepared.tensor.shape, prepared.crop.shape  # normalised [3, H, W], and the RGB pixels it shows
        """
        return self.preprocessor(image)

    def perturbation(
        self,
        attention: str | None = None,
        blocks: Iterable[int] | None = None,
        renormalize: bool = False,
        drop_tokens: Iterable[int] | None = None,
    ) -> Perturbation:
        """Validate perturbation options (see :mod:`vitlens_widgets.engine.perturb`).

        Example:
            >>> lens.perturbation(attention="no_cls", blocks=[5, 6], renormalize=True)
            Perturbation(attention='no_cls', blocks=(5, 6), renormalize=True, drop_tokens=())
        """
        return make_perturbation(self.tokens, self.depth, attention, blocks, renormalize, drop_tokens)

    def trace(
        self,
        image: ImageLike,
        attention: str | None = None,
        blocks: Iterable[int] | None = None,
        renormalize: bool = False,
        drop_tokens: Iterable[int] | None = None,
        cache: bool = True,
    ) -> Trace:
        """Run the model on one image and keep every hidden state.

        ``image``: a ``PIL.Image``, a file path, an ``HxWx3`` uint8 array, or an
        already preprocessed float ``[3, H, W]`` tensor.

        Perturbations (see :mod:`vitlens_widgets.engine.perturb`):
        ``attention="self_only" | "no_cls"`` in ``blocks`` (1-based; default all),
        ``renormalize`` for ``no_cls``, and ``drop_tokens`` (image tokens removed
        from the sequence).

        ``cache=False`` neither reads nor fills the recent-traces cache (for one-off
        traces such as the explorer's what-if, which keeps the one it shows itself).

        Example:
            >>> lens.trace(image, attention="self_only", blocks=[4, 5, 6])
        """
        perturbation = self.perturbation(attention, blocks, renormalize, drop_tokens)
        prepared = self.prepare(image)
        fingerprint = _fingerprint(prepared.tensor)
        if not perturbation.active and fingerprint in self._pinned:
            return self._pinned[fingerprint]
        key = (fingerprint, perturbation)
        if cache:
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        trace = self._run([prepared], perturbation)[0]  # outside the lock: another thread's lookups go on
        if cache and self.cache_size:
            with self._cache_lock:
                self._cache[key] = trace
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return trace

    def trace_batch(self, images: Iterable[Any], **perturbation: Any) -> TraceBatch:
        """Trace several images in one forward pass (see :meth:`iter_batches` for large sets).

        Keyword arguments are the perturbations of :meth:`trace`.

        Example:
            >>> batch = lens.trace_batch(vl.data.shapes(8, seed=2).images)
            >>> batch.predictions  # the model's own top-1 class per image
        """
        options = self.perturbation(**perturbation)
        prepared = [self.prepare(_image_of(item)) for item in check_images(images)]
        if not prepared:
            raise ValueError("trace_batch needs at least one image")
        return self._run(prepared, options)

    def iter_batches(
        self,
        images: Iterable[Any],
        batch_size: int = 32,
        progress: bool = True,
        desc: str = "tracing",
        **perturbation: Any,
    ) -> Iterator[TraceBatch]:
        """Stream :class:`TraceBatch` es over any iterable or ``Dataset`` with bounded memory.

        Items may be images or ``(image, label, ...)`` tuples (the first element is used).
        Keyword arguments are the perturbations of :meth:`trace`.

        Example:
            >>> data = vl.data.ShapesDataset(1000, seed=2)
            >>> predictions = np.concatenate([b.predictions for b in lens.iter_batches(data, batch_size=64)])
        """
        if check_int(batch_size, "batch_size") < 1:
            raise ValueError("batch_size must be >= 1")
        options = self.perturbation(**perturbation)
        images = check_images(images)
        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
        with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
            pending: list[Prepared] = []
            for item in images:
                pending.append(self.prepare(_image_of(item)))
                if len(pending) == batch_size:
                    yield self._run(pending, options)
                    bar.update(len(pending))
                    pending = []
            if pending:
                yield self._run(pending, options)
                bar.update(len(pending))

    def iter_traces(
        self, images: Iterable[Any], batch_size: int = 32, progress: bool = True, **perturbation: Any
    ) -> Iterator[Trace]:
        """Stream one :class:`Trace` per image, computed ``batch_size`` at a time.

        Example:
            >>> ranks = [t.rank("star")[-1, 0] for t in lens.iter_traces(vl.data.shapes(100, seed=2).images)]
        """
        for batch in self.iter_batches(images, batch_size=batch_size, progress=progress, **perturbation):
            yield from batch

    def memory_keys(self, trace: Trace, block: int, kind: str = "mlp") -> np.ndarray:
        """float32 ``[T, memories]``: key coefficients of block ``block``'s memories for every token of ``trace``.

        ``kind="mlp"``: ``fc1`` outputs (before the activation); ``kind="attn"``:
        the input of the attention's output projection. Perturbations of the
        trace are honoured. See :mod:`vitlens_widgets.analysis.memories`.

        Example:
            >>> keys = lens.memory_keys(trace, block=6)  # [T, memories]
            >>> keys[0].argsort()[-5:]  # the five memories [CLS] activates most
        """
        if kind not in ("mlp", "attn"):
            raise ValueError(f"kind must be 'mlp' or 'attn', got {kind!r}")
        if not 1 <= check_int(block, "block") <= self.depth:
            raise ValueError(f"block must be 1..{self.depth}, got {block}")
        perturbation = self.perturbation(**trace.options)
        x = trace.hidden["resid"][block - 1]
        if kind == "mlp":
            x = x + trace.hidden["attn"][block - 1]
        x = torch.nan_to_num(x)[None].to(self.device)  # removed tokens are masked out; zeros keep NaN away
        mask, hook = self._block_restrictions(perturbation, block, x.dtype)
        with torch.inference_mode():
            keys = self.adapter.memory_keys(block - 1, kind, x, mask, hook)[0]
        out = keys.float().cpu().numpy()
        out[trace.dropped if trace.dropped is not None else np.zeros(len(out), bool)] = np.nan
        return out

    def clear_cache(self) -> None:
        """Forget recent traces (pinned ones, from :meth:`load_traces`, stay).

        Example:
            >>> lens.clear_cache()
        """
        with self._cache_lock:
            self._cache.clear()

    # --- saved traces ----------------------------------------------------------------
    def save_traces(self, images: Iterable[Any], path: str | os.PathLike, progress: bool = True) -> int:
        """Trace ``images`` once and write the traces, projected at every site, to ``path``.

        Returns the file size in bytes. Pair with :meth:`load_traces` so that many
        kernels (a class on a JupyterHub) open the same gallery without a forward pass.

        Example:
            >>> lens.save_traces(vl.data.shapes(5, seed=2).images, "gallery.vltrace")
        """
        from .saved import save_traces

        return save_traces(self, images, path, progress=progress)

    def load_traces(self, path: str | os.PathLike) -> list[torch.Tensor]:
        """Load traces written by :meth:`save_traces`; returns the gallery to pass to ``vl.explore``.

        The traces stay in this lens for its lifetime, so tracing a gallery item
        (unperturbed) costs no forward pass. Raises ``ValueError`` if the file
        was written for a model with other weights.

        Example:
            >>> gallery = lens.load_traces("gallery.vltrace")
            >>> vl.explore(lens, gallery)
        """
        from .saved import load_traces

        return load_traces(self, path)

    def pin(self, image: ImageLike, trace: Trace) -> None:
        """Keep ``trace`` as the unperturbed trace of ``image`` for this lens's lifetime.

        Example:
            >>> image = vl.data.shapes(1).images[0]
            >>> lens.pin(image, lens.trace(image))  # survives clear_cache() and cache eviction
        """
        self._pinned[_fingerprint(self.prepare(image).tensor)] = trace

    # --- the forward pass ----------------------------------------------------------
    def _run(self, prepared: list[Prepared], perturbation: Perturbation = NO_PERTURBATION) -> TraceBatch:
        x = torch.stack([p.tensor for p in prepared]).to(self.device, _model_dtype(self.model))
        with torch.inference_mode():
            hidden, output = self._forward(x, perturbation)
        output_np = output.float().cpu().numpy()
        dropped = np.zeros(self.tokens.n_tokens, dtype=bool)
        dropped[list(perturbation.drop_tokens)] = True
        traces = [
            Trace(
                hidden={site: h[:, i] for site, h in hidden.items()},
                output_logits=output_np[i],
                readout=self.adapter.readout,
                class_names=self.class_names,
                tokens=self.tokens,
                image=p.crop,
                options=perturbation.as_dict(),
                dropped=dropped,
            )
            for i, p in enumerate(prepared)
        ]
        return TraceBatch(traces, hidden=hidden)

    def _forward(
        self, x: torch.Tensor, perturbation: Perturbation = NO_PERTURBATION
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Embeddings, then each block as two residual updates.

        Returns the hidden states per site, layer-major ``[rows, B, T, D]``, and the model's own logits.
        """
        adapter = self.adapter
        embedded = adapter.embed(x)
        first = embedded.tokens
        depth = adapter.depth
        # Layer-major buffers, written in place as the blocks run: no stacking copies afterwards.
        resid = first.new_empty((depth + 1, *first.shape))
        attn = first.new_empty((depth, *first.shape))
        mlp = first.new_empty((depth, *first.shape))
        resid[0].copy_(first)
        h = resid[0]
        for i in range(depth):
            mask, hook = self._block_restrictions(perturbation, i + 1, h.dtype)
            a = adapter.attn_update(i, h, embedded.context, mask=mask, weights_hook=hook)
            attn[i].copy_(a)
            mid = h + a
            m = adapter.mlp_update(i, mid)
            mlp[i].copy_(m)
            torch.add(mid, m, out=resid[i + 1])
            h = resid[i + 1]
        kept = [t for t in range(self.tokens.n_tokens) if t not in set(perturbation.drop_tokens)]
        output = adapter.model_logits(h[:, kept] if perturbation.drop_tokens else h)
        hidden = {"resid": resid, "attn": attn, "mlp": mlp}  # layer-major: [rows, B, T, D]
        if perturbation.drop_tokens:
            for states in hidden.values():
                states[:, :, list(perturbation.drop_tokens)] = float("nan")  # not in the sequence
        return hidden, output

    def _block_restrictions(
        self, perturbation: Perturbation, block_number: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, Any]:
        if not perturbation.active:
            return None, None
        mask = attention_mask(perturbation, self.tokens, block_number, dtype)
        if mask is not None:
            mask = mask.to(self.device)
        no_cls_zeroed = perturbation.applies_to(block_number) and perturbation.attention == "no_cls"
        hook = zero_cls_weights(self.tokens) if no_cls_zeroed and not perturbation.renormalize else None
        return mask, hook


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, checked to exist on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:1' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} requested but CUDA is not available on this machine; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available on this machine; use device='cpu'")
    return dev


def _model_dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return param.dtype if param is not None else torch.float32


def check_images(images: Any) -> Iterable[Any]:
    """``images`` if it is a collection of images; ``TypeError``/``ValueError`` for one image or a non-iterable."""
    if isinstance(images, (str, bytes, os.PathLike)) or not _iterable(images):
        raise TypeError(
            f"images must be an iterable of images (a list, an array [n, H, W, 3] or a Dataset), got "
            f"{type(images).__name__}; for one image use lens.trace(image)"
        )
    one_array = isinstance(images, np.ndarray) and (
        images.ndim < 3 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4))
    )
    if one_array or (isinstance(images, torch.Tensor) and images.ndim < 4):
        raise ValueError(
            f"images has shape {tuple(images.shape)}, which is one image, not several: stack them to [n, H, W, 3] "
            "(or [n, 3, H, W] preprocessed), or use lens.trace(image)"
        )
    return images


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _image_of(item: Any) -> Any:
    """The image of a dataset item: the item itself, or the first element of a tuple/list."""
    if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
        return item[0]
    return item


def _fingerprint(tensor: torch.Tensor) -> str:
    return hashlib.blake2b(tensor.contiguous().numpy().tobytes(), digest_size=16).hexdigest()


__all__ = ["Lens", "resolve_device"]
