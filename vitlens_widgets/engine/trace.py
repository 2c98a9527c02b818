"""Traces: the hidden states of one forward pass, read lazily in class embedding space.

Conventions, used everywhere in the package:

* **site** -- where a hidden state is read: ``"resid"`` (the residual stream),
  ``"attn"`` and ``"mlp"`` (what each sublayer adds to the residual stream).
* **layer** -- a block number. For ``"resid"``, layer 0 is the embeddings
  entering block 1 and layer ``b`` the output of block ``b`` (arrays have
  ``L + 1`` rows, row = layer). For ``"attn"``/``"mlp"``, layer ``b`` is the
  sublayer inside block ``b``, ``1 <= b <= L`` (arrays have ``L`` rows, row =
  layer - 1).
* **token** -- position in the model's sequence: prefix tokens first (``cls``,
  ``dist``, ``reg0``...), then patches row-major.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from .classes import ClassLike, ClassNames

SITES: tuple[str, ...] = ("resid", "attn", "mlp")


def check_int(value: Any, name: str) -> int:
    """``value`` as an int, or ``TypeError`` naming the argument (bools and floats are refused, numpy ints pass)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_ints(values: Any, name: str) -> list[int]:
    """A list of ints from an iterable of them; a single int or a string raises ``TypeError`` with an example."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of ints (e.g. {name}=[3]), got {type(values).__name__} {values!r}")
    return [check_int(v, name) for v in values]


def check_site(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: choose one of {', '.join(repr(s) for s in SITES)}")
    return site


def layer_numbers(site: str, depth: int) -> range:
    """The valid layer numbers of ``site`` for a model with ``depth`` blocks."""
    return range(0, depth + 1) if check_site(site) == "resid" else range(1, depth + 1)


def layer_row(site: str, layer: int, depth: int) -> int:
    """Array row of ``layer`` at ``site`` (see the module docstring), with a clear error when out of range.

    Example:
        >>> layer_row("resid", 6, depth=6), layer_row("mlp", 6, depth=6)  # resid has L + 1 rows, mlp L
        (6, 5)
    """
    valid = layer_numbers(site, depth)
    layer = check_int(layer, "layer")
    if layer not in valid:
        raise ValueError(
            f"layer {layer} is out of range for site {site!r}: valid layers are {valid.start}..{valid.stop - 1}"
            + (" (layer 0 exists only for 'resid', the embeddings)" if site != "resid" and layer == 0 else "")
        )
    return int(layer) - valid.start


@dataclass(frozen=True)
class TokenLayout:
    """The token sequence: prefix tokens, then a ``grid[0] x grid[1]`` patch grid, row-major.

    Every lens has one (``lens.tokens``), shared by its traces (``trace.tokens``).

    Example:
        >>> lens.tokens.n_prefix, lens.tokens.grid, lens.tokens.n_tokens
        (1, (8, 8), 65)
        >>> lens.tokens.token_at(3, 4), lens.tokens.names[29]
        (29, 'patch 3,4')
    """

    prefix: tuple[str, ...]
    grid: tuple[int, int]
    patch_size: tuple[int, int]

    @property
    def n_prefix(self) -> int:
        """Number of prefix tokens ([CLS], distillation, registers) before the patches."""
        return len(self.prefix)

    @property
    def n_patches(self) -> int:
        """Number of patch tokens, ``grid[0] * grid[1]``."""
        return self.grid[0] * self.grid[1]

    @property
    def n_tokens(self) -> int:
        """Sequence length ``T``: prefix tokens plus patches."""
        return self.n_prefix + self.n_patches

    @property
    def image_tokens(self) -> slice:
        """Slice of the patch tokens in the sequence."""
        return slice(self.n_prefix, self.n_tokens)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Per token: ``"cls"``, ``"dist"``, ``"register"`` or ``"patch"``."""
        prefix = tuple("register" if p.startswith("reg") else p for p in self.prefix)
        return prefix + ("patch",) * self.n_patches

    @property
    def names(self) -> tuple[str, ...]:
        """Per token: ``"cls"``, ``"reg0"``, ..., then ``"patch r,c"``."""
        h, w = self.grid
        return self.prefix + tuple(f"patch {r},{c}" for r in range(h) for c in range(w))

    def check_token(self, token: int) -> int:
        token = check_int(token, "token")
        if not 0 <= token < self.n_tokens:
            raise ValueError(
                f"token {token} is out of range: this sequence has {self.n_tokens} tokens (0..{self.n_tokens - 1})"
            )
        return int(token)

    def patch_position(self, token: int) -> tuple[int, int]:
        """(row, column) of a patch token in the grid."""
        token = self.check_token(token)
        if token < self.n_prefix:
            raise ValueError(f"token {token} is the prefix token {self.prefix[token]!r}, not a patch")
        return divmod(token - self.n_prefix, self.grid[1])

    def token_at(self, row: int, col: int) -> int:
        """Sequence index of the patch at (row, column)."""
        h, w = self.grid
        row, col = check_int(row, "row"), check_int(col, "col")
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"patch ({row}, {col}) is outside the {h}x{w} grid")
        return self.n_prefix + row * w + col


class Prediction(NamedTuple):
    """The model's own top-1 class.

    Example:
        >>> trace = lens.trace(vl.data.shapes(1).images[0])
        >>> index, name, probability = trace.prediction
        >>> name, round(probability, 2)
        ('bar', 0.91)
    """

    index: int
    name: str
    probability: float


class TopK(NamedTuple):
    """Top classes per token, best first; arrays share leading shape ``[..., T, k]``.

    Example:
        >>> top = trace.topk(3, layer=4)  # [T, k] at layer 4
        >>> top.names[0], top.probs[0]  # [CLS]'s three best classes and their probabilities
    """

    indices: np.ndarray  # int64
    logits: np.ndarray  # float32
    probs: np.ndarray  # float32
    names: list  # nested lists of class names, same shape as indices


Readout = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Trace:
    """One image's forward pass: hidden states at every site, block and token, projected on demand.

    Obtain one with ``lens.trace(image)``. Projections (``logits``) are computed on
    first use per site and cached; everything returned is a numpy array.

    Example:
        >>> trace = lens.trace(image)
        >>> trace.identifiability(trace.prediction.index, "resid")[-1, 0]  # [CLS] at the last block
    """

    hidden: dict[str, torch.Tensor]  # site -> [rows, T, D]
    output_logits: np.ndarray  # float32 [C], the model's own output
    readout: Readout = field(repr=False)
    class_names: ClassNames = field(repr=False)
    tokens: TokenLayout = field(repr=False)
    image: np.ndarray = field(repr=False)  # uint8 [H, W, 3]
    options: dict[str, Any] = field(default_factory=dict)  # the perturbation, if any
    dropped: np.ndarray | None = field(default=None, repr=False)  # bool [T]: tokens removed from the sequence
    _logits: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _log_partition: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # site -> [rows, T]
    _projected: set[str] = field(default_factory=set, repr=False)  # sites whose logits this trace computed itself

    @property
    def depth(self) -> int:
        """Number of transformer blocks ``L``."""
        return self.hidden["attn"].shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    @property
    def prediction(self) -> Prediction:
        """The model's own top-1 class, its name and its probability."""
        probs = _softmax(self.output_logits)
        i = int(np.argmax(self.output_logits))
        return Prediction(i, self.class_names[i], float(probs[i]))

    @property
    def nbytes(self) -> int:
        """Bytes held by hidden states, cached projections and the image."""
        hidden = sum(t.element_size() * t.nelement() for t in self.hidden.values())
        cached = sum(a.nbytes for a in (*self._logits.values(), *self._log_partition.values()))
        return hidden + cached + self.image.nbytes

    def layers(self, site: str) -> range:
        """Valid layer numbers of ``site``: 0..L for ``"resid"``, 1..L for ``"attn"``/``"mlp"``.

        Example:
            >>> trace.layers("attn")
            range(1, 7)
        """
        return layer_numbers(site, self.depth)

    def hidden_states(self, site: str = "resid") -> np.ndarray:
        """Raw hidden states, float32 ``[rows, T, D]`` (rows as in :meth:`logits`).

        Example:
            >>> trace.hidden_states("resid").shape  # [L+1, T, D]
            (7, 65, 192)
        """
        return self.hidden[check_site(site)].detach().cpu().numpy()

    def logits(self, site: str = "resid") -> np.ndarray:
        """Class logits of every token at every layer: float32 ``[L+1, T, C]`` for ``"resid"``, else ``[L, T, C]``.

        Example:
            >>> trace.logits("mlp")[5, 0]  # what block 6's MLP adds to each class logit of [CLS]
        """
        check_site(site)
        if site not in self._logits:
            self._logits[site] = project(self.readout, self.hidden[site])
            self._projected.add(site)
        return self._logits[site]

    def forget_logits(self, keep: Sequence[str] = ()) -> int:
        """Drop the logits this trace projected itself (and their log-partitions) for every site but ``keep``;
        returns the bytes let go. They are projected again, to the same bits, when next asked for.

        Logits loaded with the trace (``lens.load_traces``) or shared with a batch stay.
        The explorer calls this for what is off screen (10 MB per site for ViT-B/16).

        Example:
            >>> trace.forget_logits(keep=["resid"])  # the attention and MLP logits go; hidden states stay
        """
        gone = self._projected - {check_site(site) for site in keep}
        self._projected -= gone  # only these: a site projected meanwhile (another thread) stays forgettable
        freed = 0
        for site in gone:
            logits = self._logits.pop(site, None)
            freed += 0 if logits is None else logits.nbytes
            self._log_partition.pop(site, None)
        return freed

    def probs(self, site: str = "resid") -> np.ndarray:
        """Softmax of :meth:`logits` over classes (computed fresh, not cached, to keep traces small).

        Example:
            >>> trace.probs()[-1, 0].max()  # [CLS] at the last layer: the model's own confidence
        """
        return _softmax(self.logits(site))

    def class_probs(self, classes: Sequence[ClassLike], site: str = "resid") -> np.ndarray:
        """float32 ``[len(classes), rows, T]``: the softmax probability of each class, without a full softmax.

        The log-partition per token is computed once per site and cached (``[rows, T]``, small),
        so each further class costs one pass over ``[rows, T]``.

        Example:
            >>> trace.class_probs([trace.prediction.index], "mlp")[0, -1, 0]  # last MLP update of [CLS]
        """
        indices = [self.class_index(c) for c in classes]
        picked = np.moveaxis(self.logits(site)[..., indices], -1, 0)
        return np.exp(picked - self.log_partition(site)).astype(np.float32)

    def log_partition(self, site: str = "resid", rows: int | slice | None = None) -> np.ndarray:
        """float32 ``[rows, T]``: log-sum-exp of the class logits per token (cached), so ``p_c = exp(logit_c - lse)``.

        ``rows`` (an index or slice of the rows) reads the cached site when it is held,
        otherwise computes those rows alone (the same numbers, not cached): one layer or
        one chunk never pays for the whole site.

        Example:
            >>> np.exp(trace.logits("resid")[..., 3] - trace.log_partition("resid"))  # probability of class 3
        """
        if rows is not None:
            cached = self._log_partition.get(site)
            return cached[rows] if cached is not None else log_partition_of(self.logits(site)[rows])
        if site not in self._log_partition:
            self._log_partition[site] = log_partition_of(self.logits(site))
        return self._log_partition[site]

    def class_index(self, cls: ClassLike) -> int:
        """Resolve a class index or name (``ValueError`` with suggestions when unknown).

        Example:
            >>> trace.class_index("star")
            3
        """
        return self.class_names.index(cls)

    def rank(self, cls: ClassLike, site: str = "resid") -> np.ndarray:
        """int32 ``[rows, T]``: how many classes have a strictly greater logit than ``cls`` (0 = top-1).

        Tokens removed with ``drop_tokens`` have rank -1.

        Example:
            >>> trace.rank("star")[:, 0]  # the rank of 'star' at [CLS], layer 0..L
        """
        return mark_dropped(rank_of(self.logits(site), self.class_index(cls)), self.dropped)

    def identifiability(self, cls: ClassLike, site: str = "resid") -> np.ndarray:
        """float32 ``[rows, T]``: ``1 - rank / C`` (1 = top-1, 0 = below every other class; NaN if dropped).

        Example:
            >>> trace.identifiability("star", "mlp")[:, trace.tokens.image_tokens].mean(axis=1)  # per block
        """
        return identifiability_from_rank(self.rank(cls, site), self.num_classes)

    def rank_index(self, site: str = "resid") -> RankIndex:
        """A :class:`RankIndex` over this site's logits: for many classes' ranks in a row (not cached here).

        Example:
            >>> index = trace.rank_index("resid")
            >>> ranks = [index.rank(c) for c in range(trace.num_classes)]
        """
        return RankIndex(self.logits(site), self.dropped)

    def topk(self, k: int = 5, site: str = "resid", layer: int | None = None) -> TopK:
        """The ``k`` highest classes per token, ``[T, k]`` at one layer or ``[rows, T, k]`` for all.

        Example:
            >>> trace.topk(3, layer=4).names[0]  # [CLS]'s three best classes at layer 4
            ['bar', 'star', 'cross']
        """
        if not 1 <= check_int(k, "k") <= self.num_classes:
            raise ValueError(f"k must be between 1 and {self.num_classes}, got {k}")
        if layer is None:
            return top_classes(self.logits(site), k, self.class_names, self.log_partition(site))
        row = layer_row(site, layer, self.depth)
        return top_classes(self.logits(site)[row], k, self.class_names, self.log_partition(site, rows=row))


def log_partition_of(logits: np.ndarray) -> np.ndarray:
    """float32 ``[...]``: log-sum-exp over the last axis of ``logits [..., C]``, one row at a time.

    Each row's value depends on that row alone, so a slice of rows gives exactly the
    same numbers as the slice of the whole (the explorer sends it chunk by chunk).
    """
    peak = logits.max(axis=-1)
    shifted = logits - peak[..., None]
    np.exp(shifted, out=shifted)  # in place: one temporary of the logits' size, not two
    return (peak + np.log(shifted.sum(axis=-1))).astype(np.float32)


PROJECT_CHUNK_ROWS = 4096  # tokens per readout step: small enough to stay in cache, big enough for a fast GEMM


def project(readout: Readout, hidden: torch.Tensor, chunk_rows: int = PROJECT_CHUNK_ROWS) -> np.ndarray:
    """Apply ``readout`` to every token of ``hidden`` ``[..., D]`` → float32 ``[..., C]``.

    The tokens go through the readout ``chunk_rows`` at a time, each chunk written
    into one output array: the normalised intermediate never exists for all tokens
    at once, which saves memory and time. (Matrix products of other heights may
    round differently in the last bit; the chunking is fixed, so a projection is
    reproducible.)
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    with torch.inference_mode():
        first = readout(flat[:chunk_rows]).float().cpu()
        out = first.new_empty((flat.shape[0], first.shape[1]))
        out[: len(first)] = first
        for start in range(chunk_rows, flat.shape[0], chunk_rows):
            out[start : start + chunk_rows] = readout(flat[start : start + chunk_rows]).float()
    return out.numpy().reshape(*hidden.shape[:-1], -1)


def streamed_rank(
    readout: Readout, hidden: torch.Tensor, cls_per_row: torch.Tensor, chunk_rows: int = PROJECT_CHUNK_ROWS
) -> np.ndarray:
    """int32 ``[...]``: :func:`rank_of` of the readout of ``hidden`` ``[..., D]`` without keeping its logits.

    ``cls_per_row`` holds one class per token (same leading shape as ``hidden``).
    The logits exist one chunk at a time, so the rank of a whole batch costs no
    ``[..., C]`` array; the chunks match :func:`project`'s, so the counts equal
    ``rank_of(project(readout, hidden), cls)`` exactly.
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    targets = cls_per_row.reshape(-1, 1).to(flat.device, torch.int64)
    out = torch.empty(flat.shape[0], dtype=torch.int32, device=flat.device)
    with torch.inference_mode():
        for start in range(0, flat.shape[0], chunk_rows):
            stop = start + chunk_rows
            logits = readout(flat[start:stop]).float()
            target = logits.gather(1, targets[start:stop])
            torch.sum(logits > target, dim=1, dtype=torch.int32, out=out[start:stop])
    return out.cpu().numpy().reshape(hidden.shape[:-1])


def rank_of(logits: np.ndarray, cls: int | np.ndarray) -> np.ndarray:
    """Count of classes with a strictly greater logit than ``cls`` along the last axis (ties favour ``cls``).

    ``cls`` is one class, or an integer array aligned with the leading axes of
    ``logits`` (e.g. one true label per image for ``[B, rows, T, C]``).
    """
    index = np.asarray(cls, dtype=np.intp)
    index = index.reshape(index.shape + (1,) * (logits.ndim - index.ndim))
    target = np.take_along_axis(logits, index, axis=-1)
    return np.count_nonzero(logits > target, axis=-1).astype(np.int32)


class RankIndex:
    """Every class's rank at every layer and token of one site, counted once, so a class is a lookup.

    The ranks are exactly :func:`rank_of`'s (classes with a strictly greater
    logit; tied classes share the better rank). Building it sorts each token's
    logits once, about as long as 40 single-class ranks (80 ms for ViT-B/16's
    residual stream); it holds an int16 ``[rows, T, C]`` table (5 MB there).
    The explorer builds one for a request of many classes, or in the background for single ones.

    Example:
        >>> index = trace.rank_index("resid")
        >>> (index.rank(3) == trace.rank(3, "resid")).all()
        True
    """

    def __init__(self, logits: np.ndarray, dropped: np.ndarray | None = None):
        self.num_classes = logits.shape[-1]
        self.dropped = dropped
        self._table = _rank_table(logits)

    def rank(self, cls: int) -> np.ndarray:
        """int32 ``[rows, T]``: like :meth:`Trace.rank` (-1 for removed tokens)."""
        return mark_dropped(self._table[..., cls].astype(np.int32), self.dropped)

    def identifiability(self, cls: int) -> np.ndarray:
        """float32 ``[rows, T]``: like :meth:`Trace.identifiability`."""
        return identifiability_from_rank(self.rank(cls), self.num_classes)


def _rank_table(logits: np.ndarray) -> np.ndarray:
    """``[..., C]`` ranks of every class: the position of its run of equal logits in descending order."""
    classes = logits.shape[-1]
    dtype = np.int16 if classes <= np.iinfo(np.int16).max else np.int32
    order = np.argsort(-logits, axis=-1)
    ordered = np.take_along_axis(logits, order, axis=-1)
    starts_run = np.ones(ordered.shape, dtype=bool)
    starts_run[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    first_of_run = np.maximum.accumulate(np.where(starts_run, np.arange(classes, dtype=dtype), dtype(0)), axis=-1)
    table = np.empty(logits.shape, dtype=dtype)
    np.put_along_axis(table, order, first_of_run, axis=-1)
    return table


def mark_dropped(rank: np.ndarray, dropped: np.ndarray | None) -> np.ndarray:
    """Set the rank of removed tokens (last axis) to -1."""
    if dropped is not None and dropped.any():
        rank[..., dropped] = -1
    return rank


def identifiability_from_rank(rank: np.ndarray, num_classes: int) -> np.ndarray:
    """``1 - rank / C`` as float32; NaN where rank is -1 (a removed token)."""
    out = (1.0 - rank.astype(np.float32) / np.float32(num_classes)).astype(np.float32)
    out[rank < 0] = np.nan
    return out


def top_classes(
    logits: np.ndarray, k: int, class_names: Sequence[str], log_partition: np.ndarray | None = None
) -> TopK:
    """The ``k`` highest classes of ``logits [..., C]``; probabilities as ``exp(logit - log_partition)``,
    the explorer's formula, so a hovered token's top classes read exactly what its grid cell shows."""
    values, indices = torch.from_numpy(np.ascontiguousarray(logits)).topk(k, dim=-1)
    values, indices = values.numpy(), indices.numpy()
    if log_partition is None:
        log_partition = log_partition_of(logits)
    probs = np.exp(values - log_partition[..., None]).astype(np.float32)
    names = np.asarray(class_names, dtype=object)[indices].tolist()
    return TopK(indices, values, probs, names)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class TraceBatch(Sequence):
    """Traces of a batch of images from one forward pass; projections are computed batch-wide.

    Indexing gives a :class:`Trace`; the batched accessors return arrays with a
    leading batch axis.

    Example:
        >>> batch = lens.trace_batch(vl.data.shapes(8, seed=2).images)
        >>> len(batch), batch[0].prediction, batch.predictions
    """

    def __init__(self, traces: list[Trace], hidden: dict[str, torch.Tensor] | None = None):
        if not traces:
            raise ValueError("a TraceBatch needs at least one trace")
        self._traces = traces
        self._hidden = hidden  # site -> layer-major [rows, B, T, D], when the traces are views of one batch
        self._logits: dict[str, np.ndarray] = {}

    def __getitem__(self, i):  # type: ignore[override]
        return self._traces[i]

    def __len__(self) -> int:
        return len(self._traces)

    def __iter__(self) -> Iterator[Trace]:
        return iter(self._traces)

    @property
    def tokens(self) -> TokenLayout:
        """The token layout shared by every trace of the batch."""
        return self._traces[0].tokens

    @property
    def class_names(self) -> ClassNames:
        """The model's class names."""
        return self._traces[0].class_names

    @property
    def depth(self) -> int:
        """Number of transformer blocks ``L``."""
        return self._traces[0].depth

    @property
    def predictions(self) -> np.ndarray:
        """int64 ``[B]``: the model's own top-1 class per image."""
        return np.array([int(np.argmax(t.output_logits)) for t in self._traces])

    @property
    def images(self) -> np.ndarray:
        """uint8 ``[B, H, W, 3]``: the input crops, as the model saw them."""
        return np.stack([t.image for t in self._traces])

    def logits(self, site: str = "resid") -> np.ndarray:
        """float32 ``[B, rows, T, C]``, projected in one batched readout and shared with each trace's cache.

        Example:
            >>> batch.logits("resid").shape  # [B, L+1, T, C]
            (8, 7, 65, 10)
        """
        check_site(site)
        if site not in self._logits:
            if self._hidden is not None and not any(site in t._logits for t in self._traces):
                projected = np.moveaxis(project(self._traces[0].readout, self._hidden[site]), 1, 0)  # [B, rows, T, C]
            else:
                projected = np.stack([t.logits(site) for t in self._traces])
            for t, arr in zip(self._traces, projected):
                t._logits[site] = arr  # views: the batch and its traces share one array
            self._logits[site] = projected
        return self._logits[site]

    def mid_logits(self) -> np.ndarray:
        """float32 ``[B, L, T, C]``: the residual stream *inside* each block, after attention and before the MLP.

        Row ``b - 1`` projects ``resid[b-1] + attn[b]``, the stream the MLP of block ``b`` reads.

        Example:
            >>> batch.mid_logits()[:, 5, 0].argmax(-1)  # [CLS]'s top class inside block 6, before its MLP
        """
        if self._hidden is not None:
            mid = self._hidden["resid"][:-1] + self._hidden["attn"]  # [L, B, T, D]
            return np.moveaxis(project(self._traces[0].readout, mid), 1, 0)
        mid = torch.stack([t.hidden["resid"][:-1] + t.hidden["attn"] for t in self._traces])
        return project(self._traces[0].readout, mid)

    def rank(self, cls: ClassLike | Sequence[ClassLike] | np.ndarray, site: str = "resid") -> np.ndarray:
        """int32 ``[B, rows, T]``; ``cls`` is one class for all images, or one per image (e.g. true labels).

        When the site's logits are not cached yet, the ranks are counted chunk by
        chunk and the ``[B, rows, T, C]`` logits are never kept (dataset analyses
        need only the ranks); call :meth:`logits` first to keep them.

        Example:
            >>> data = vl.data.shapes(8, seed=2)
            >>> lens.trace_batch(data.images).rank(data.labels)[:, -1, 0]  # true class's rank at the last [CLS]
        """
        classes = self._class_per_image(cls)
        if self._hidden is not None and site not in self._logits:
            rank = self._streamed_rank(classes, check_site(site))
        else:
            rank = rank_of(self.logits(site), classes)
        return mark_dropped(rank, self._traces[0].dropped)

    def identifiability(self, cls: ClassLike | Sequence[ClassLike] | np.ndarray, site: str = "resid") -> np.ndarray:
        """float32 ``[B, rows, T]``: ``1 - rank / C``.

        Example:
            >>> batch.identifiability(data.labels)[:, -1, 0].mean()  # [CLS] at the last layer, mean over images
        """
        return identifiability_from_rank(self.rank(cls, site), len(self.class_names))

    def _streamed_rank(self, classes: np.ndarray, site: str) -> np.ndarray:
        hidden = self._hidden[site]  # [rows, B, T, D]
        rows, batch, tokens = hidden.shape[:3]
        per_row = torch.from_numpy(classes).view(1, batch, 1).expand(rows, batch, tokens)
        return np.ascontiguousarray(np.moveaxis(streamed_rank(self._traces[0].readout, hidden, per_row), 1, 0))

    def _class_per_image(self, cls: Any) -> np.ndarray:
        if isinstance(cls, (str, int, np.integer)):
            return np.full(len(self), self.class_names.index(cls), dtype=np.int64)
        targets = [self.class_names.index(c) for c in cls]
        if len(targets) != len(self):
            raise ValueError(f"got {len(targets)} classes for a batch of {len(self)} images")
        return np.asarray(targets, dtype=np.int64)
