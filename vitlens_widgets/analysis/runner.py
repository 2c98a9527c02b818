"""One runner for every dataset analysis: per-image partial results mapped over batches, then reduced.

An analysis is a :class:`Job`: ``setup(lens)`` once per worker (state reused by every
batch), ``map(lens, state, batch)`` returning per-image partial results (arrays whose
first axis is the batch's images), and ``reduce(lens, columns)`` turning the partials
of every image, gathered in data order, into the analysis's result. :func:`run`
executes a job locally (streaming, bounded memory) or on Ray Data (``map_batches`` over
an actor pool; each actor builds its lens once from a :class:`LensRecipe`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.folders import ImageFolder, load_labelled
from ..engine.lens import Lens
from ..engine.recipe import LensRecipe

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Ray:
    """Options of the Ray executor (``executor="ray"`` is ``executor=Ray()``).

    * ``actors``: size of the actor pool (default: one per GPU in the cluster when
      actors use GPUs, else one per ``num_cpus`` CPUs);
    * ``num_gpus``: GPUs per actor (default 1 when the cluster has GPUs, else 0;
      actors with a GPU trace on ``"cuda"``);
    * ``num_cpus``: CPUs per actor (also its torch thread count);
    * ``address``: passed to ``ray.init`` when Ray is not running yet (default: the
      ``RAY_ADDRESS`` environment variable, else a new local Ray).

    Example:
        >>> vl.analysis.identifiability_by_block(lens, folder, executor=Ray(actors=4, num_gpus=0.5))
    """

    actors: int | None = None
    num_gpus: float | None = None
    num_cpus: float = 1
    address: str | None = None


@dataclass
class Batch:
    """A batch of labelled images as a job's ``map`` receives it.

    Example:
        >>> batch = next(local_batches(lens, vl.data.shapes(4, seed=2), batch_size=4))
        >>> batch.labels, batch.index  # int64 [B] each
    """

    images: list[Any]  # anything Lens.trace accepts
    labels: np.ndarray  # int64 [B]
    masks: list[np.ndarray | None]  # each covering the model's input crop, or None
    index: np.ndarray  # int64 [B]: each image's position in the data

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Job:
    """A dataset analysis as map + reduce. Give module-level functions (``functools.partial`` for options):
    Ray pickles the job to send it to its actors.

    Example:
        >>> job = Job(map=count_correct, reduce=accuracy, desc="accuracy")
        >>> run(job, lens, vl.data.shapes(100, seed=2), executor="ray")
    """

    map: Callable[[Lens, Any, Batch], dict[str, np.ndarray]]
    reduce: Callable[[Lens, dict[str, np.ndarray]], Any]
    setup: Callable[[Lens], Any] | None = None
    desc: str = "analysis"
    batch_size: int = 64


def run(job: Job, lens: Lens, data: Any, executor: str | Ray = "local", progress: bool = True) -> Any:
    """Run ``job`` over ``data`` with ``executor`` (``"local"``, ``"ray"`` or :class:`Ray`) and reduce.

    ``data``: a ``ShapesBatch``, an :class:`~vitlens_widgets.data.folders.ImageFolder`,
    a ``ray.data.Dataset`` (columns ``image`` or ``path``, ``label``, optionally
    ``mask`` or ``mask_path``), a torch ``Dataset`` or an iterable of
    ``(image, label[, mask])``. Both executors give the reducer the same columns.

    Example:
        >>> per_image = run(job, lens, vl.data.image_folder("val", classes=lens.class_names), executor="ray")
    """
    if job.batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if executor == "local":
        columns = _run_local(job, lens, data, progress)
    elif executor == "ray" or isinstance(executor, Ray):
        columns = _run_ray(job, lens, data, executor if isinstance(executor, Ray) else Ray(), progress)
    else:
        raise ValueError(f"executor must be one of {EXECUTORS} or a Ray(...), got {executor!r}")
    return job.reduce(lens, columns)


def combine(**jobs: Job) -> Job:
    """Several jobs in one pass over the data (one forward pass feeds them all where they share it).

    Each job keeps its own ``setup``, ``map`` and ``reduce``; the combined result is a
    dict ``name -> result``. The batch size is the smallest of theirs.

    Example:
        >>> both = run(combine(ident=identifiability_job(), sub=sublayer_job()), lens, folder, executor="ray")
        >>> both["sub"]  # sublayer_contributions' DataFrame
    """
    if not jobs:
        raise ValueError("combine needs at least one job")
    return Job(
        map=partial(_combined_map, jobs=jobs),
        reduce=partial(_combined_reduce, jobs=jobs),
        setup=partial(_combined_setup, jobs=jobs),
        desc=" + ".join(job.desc for job in jobs.values()),
        batch_size=min(job.batch_size for job in jobs.values()),
    )


def _combined_setup(lens: Lens, jobs: dict[str, Job]) -> dict[str, Any]:
    return {name: job.setup(lens) if job.setup is not None else None for name, job in jobs.items()}


def _combined_map(lens: Lens, state: dict[str, Any], batch: Batch, jobs: dict[str, Job]) -> dict[str, np.ndarray]:
    out = {}
    for name, job in jobs.items():
        out |= {f"{name}:{key}": value for key, value in job.map(lens, state[name], batch).items()}
    return out


def _combined_reduce(lens: Lens, columns: dict[str, np.ndarray], jobs: dict[str, Job]) -> dict[str, Any]:
    results = {}
    for name, job in jobs.items():
        own = {key.partition(":")[2]: value for key, value in columns.items() if key.startswith(f"{name}:")}
        results[name] = job.reduce(lens, own | {"index": columns["index"]})
    return results


# --- data ---------------------------------------------------------------------------
def iter_labelled(data: Any) -> Iterable[tuple[Any, int, np.ndarray | None]]:
    """``(image, label, mask or None)`` items from a ``ShapesBatch``, a Dataset or an iterable of tuples.

    Example:
        >>> image, label, mask = next(iter_labelled(vl.data.shapes(4, seed=2)))
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        masks = getattr(data, "masks", None)
        for i in range(len(data.labels)):
            yield data.images[i], int(data.labels[i]), None if masks is None else masks[i]
        return
    for item in data:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError("each data item must be (image, label) or (image, label, mask)")
        yield item[0], int(item[1]), (item[2] if len(item) > 2 else None)


def labelled_count(data: Any) -> int | None:
    """How many items :func:`iter_labelled` will yield, when that is known up front (for progress bars).

    Example:
        >>> labelled_count(vl.data.shapes(4, seed=2))
        4
    """
    if hasattr(data, "labels"):
        return len(data.labels)
    if _is_ray_dataset(data):
        return None  # counting a distributed dataset can cost a pass over it
    return len(data) if hasattr(data, "__len__") else None


def labelled_items(lens: Lens, data: Any) -> Iterator[tuple[Any, int, np.ndarray | None]]:
    """``(image, label, mask)`` items ready for ``lens``: masks of image files resized and cropped like the image.

    Example:
        >>> image, label, mask = next(labelled_items(lens, vl.data.image_folder("val", masks="masks")))
    """
    if isinstance(data, ImageFolder):
        yield from data.labelled_items(lens.preprocessor)
    elif _is_ray_dataset(data):
        for columns in data.iter_batches(batch_size=64, batch_format="numpy"):
            batch = decode_batch(lens, columns)
            yield from zip(batch.images, batch.labels.tolist(), batch.masks)
    else:
        yield from iter_labelled(data)


def local_batches(lens: Lens, data: Any, batch_size: int) -> Iterator[Batch]:
    """:class:`Batch` es of ``batch_size`` items in data order (the last one may be smaller).

    Example:
        >>> [len(b) for b in local_batches(lens, vl.data.shapes(5, seed=2), 2)]
        [2, 2, 1]
    """
    pending: list[tuple[Any, int, np.ndarray | None]] = []
    start = 0
    for item in labelled_items(lens, data):
        pending.append(item)
        if len(pending) == batch_size:
            yield _batch(pending, start)
            start, pending = start + len(pending), []
    if pending:
        yield _batch(pending, start)


def _batch(items: list[tuple[Any, int, np.ndarray | None]], start: int) -> Batch:
    images, labels, masks = zip(*items)
    return Batch(list(images), np.array(labels, dtype=np.int64), list(masks), np.arange(start, start + len(items)))


def decode_batch(lens: Lens, columns: dict[str, np.ndarray]) -> Batch:
    """A :class:`Batch` from Ray columns (``image`` or ``path``, ``label``, ``mask`` or ``mask_path``, ``index``).

    Example:
        >>> decode_batch(lens, {"path": np.array(["a.png"]), "label": np.array([3]), "index": np.array([0])})
    """
    labels = np.asarray(columns["label"], dtype=np.int64)
    n = len(labels)
    masks: list[np.ndarray | None] = [None] * n
    if "path" in columns:
        mask_paths = columns.get("mask_path", [None] * n)
        loaded = [
            load_labelled(lens.preprocessor, str(p), _str_or_none(m), 0) for p, m in zip(columns["path"], mask_paths)
        ]
        images = [item[0] for item in loaded]
        masks = [item[2] for item in loaded]
    else:
        images = [_image_from_column(image) for image in columns["image"]]
    if "mask" in columns:
        masks = [np.asarray(m, dtype=bool) for m in columns["mask"]]
    index = np.asarray(columns["index"], dtype=np.int64) if "index" in columns else np.arange(n)
    return Batch(images, labels, masks, index)


def _image_from_column(image: np.ndarray) -> Any:
    image = np.asarray(image)
    return torch.from_numpy(image) if image.dtype.kind == "f" else image


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _is_ray_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("ray.data") and hasattr(data, "map_batches")


# --- local ---------------------------------------------------------------------------
def _run_local(job: Job, lens: Lens, data: Any, progress: bool) -> dict[str, np.ndarray]:
    state = job.setup(lens) if job.setup is not None else None
    parts = []
    with tqdm(total=labelled_count(data), desc=job.desc, unit="img", disable=not progress) as bar:
        for batch in local_batches(lens, data, job.batch_size):
            parts.append(_partials(job, lens, state, batch))
            bar.update(len(batch))
    return gather(parts)


def _partials(job: Job, lens: Lens, state: Any, batch: Batch) -> dict[str, np.ndarray]:
    out = {key: np.asarray(value) for key, value in job.map(lens, state, batch).items()}
    for key, value in out.items():
        if value.shape[:1] != (len(batch),):
            raise ValueError(f"{job.desc}: map returned {key!r} with shape {value.shape}, not one row per image")
    out["index"] = batch.index
    return out


def gather(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch partial results, column by column, in the order given.

    Example:
        >>> gather([{"index": np.array([0, 1])}, {"index": np.array([2])}])["index"]
        array([0, 1, 2])
    """
    if not parts:
        return {"index": np.zeros(0, dtype=np.int64)}
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}


# --- Ray ---------------------------------------------------------------------------------
class LensActor:
    """A Ray Data actor: builds its lens once from the recipe, then maps the job over batches.

    Example:
        >>> actor = LensActor(LensRecipe("demo"), job, device="cpu", threads=1)
        >>> actor({"image": images, "label": labels, "index": np.arange(len(labels))})
    """

    def __init__(self, recipe: LensRecipe, job: Job, device: str, threads: int):
        torch.set_num_threads(threads)
        self.lens = recipe.build(device=device)
        self.job = job
        self.state = job.setup(self.lens) if job.setup is not None else None

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _partials(self.job, self.lens, self.state, decode_batch(self.lens, columns))


def _run_ray(job: Job, lens: Lens, data: Any, options: Ray, progress: bool) -> dict[str, np.ndarray]:
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=options.address or os.environ.get("RAY_ADDRESS"))
    resources = ray.cluster_resources()
    gpus = options.num_gpus if options.num_gpus is not None else (1.0 if resources.get("GPU", 0) else 0.0)
    dataset, total = ray_dataset(data, job.batch_size)
    actors = options.actors or default_actors(resources, gpus, options.num_cpus, _is_ray_dataset(data))
    results = dataset.map_batches(
        LensActor,
        fn_constructor_args=(LensRecipe.of(lens), job, "cuda" if gpus else "cpu", max(1, int(options.num_cpus))),
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.num_cpus,
        num_gpus=gpus,
        batch_format="numpy",
    )
    parts = []
    with tqdm(total=total, desc=f"{job.desc} (ray, {actors} actors)", unit="img", disable=not progress) as bar:
        for columns in results.iter_batches(batch_size=None, batch_format="numpy"):
            parts.append(dict(columns))
            bar.update(len(columns["index"]))
    gathered = gather(parts)
    order = np.argsort(gathered["index"], kind="stable")  # actors finish out of order
    return {key: value[order] for key, value in gathered.items()}


def default_actors(resources: dict[str, float], gpus: float, cpus: float, reads_upstream: bool) -> int:
    """Actor pool size: one per GPU share, else one per ``cpus`` CPUs, less one when a dataset's own read tasks need a CPU.

    Example:
        >>> default_actors({"CPU": 8.0}, gpus=0, cpus=1, reads_upstream=False)
        8
    """
    if gpus:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // cpus) - int(reads_upstream))


def ray_dataset(data: Any, batch_size: int = 64) -> tuple[Any, int | None]:
    """``data`` as a Ray Dataset with an ``index`` column, and its length when known.

    Image folders become rows of file paths (each actor reads its own images; on a
    cluster the folder must be on a filesystem every node sees); in-memory data
    becomes rows of arrays; both in blocks of ``batch_size`` rows (one block per
    batch: smaller blocks cost Ray a task hand-off each). A Ray Dataset without an ``index`` column is numbered in
    its row order and materialised first (give it an ``index`` column to stream it).

    Example:
        >>> dataset, n = ray_dataset(vl.data.image_folder("val", classes=lens.class_names), batch_size=64)
    """
    import ray.data

    if _is_ray_dataset(data):
        if "index" in data.columns():
            return data, None
        n = data.count()  # numbered once, before any actor holds a CPU (so the numbering cannot starve)
        return data.zip(ray.data.range(n).rename_columns({"id": "index"})).materialize(), n
    if isinstance(data, ImageFolder):
        rows = [
            {"index": i, "path": path, "label": label, **({"mask_path": mask} if mask else {})}
            for i, (path, label, mask) in enumerate(data.files)
        ]
    else:
        rows = [_memory_row(i, *item) for i, item in enumerate(iter_labelled(data))]
        if len({"mask" in row for row in rows}) > 1:
            raise ValueError("with executor='ray', give a mask for every image or for none")
    return ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size))), len(rows)


def _memory_row(index: int, image: Any, label: int, mask: np.ndarray | None) -> dict[str, Any]:
    row: dict[str, Any] = {"index": index, "label": label}
    if isinstance(image, (str, os.PathLike)):
        row["path"] = os.fspath(image)
    elif isinstance(image, torch.Tensor):
        row["image"] = image.detach().cpu().float().numpy()
    else:
        row["image"] = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if mask is not None:
        row["mask"] = np.asarray(mask, dtype=bool)
    return row
