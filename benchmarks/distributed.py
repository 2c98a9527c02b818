"""Images per second of identifiability_by_block: local vs Ray Data with 1 and 2 actors, on the same image folder.

    .venv/bin/python benchmarks/distributed.py [--model demo] [--images 1024] [--batch-size 64] [--rounds 2]

The images are demo images written once as PNG files to a temporary image folder
(with masks); every executor reads, crops and traces the same files. The job is
identifiability_by_block's own, with one addition: each map call stamps its
images with the wall-clock time it finished (all processes share the clock). So
each run splits into a start-up (run start -> first batch done: for Ray, planning
the dataset and starting actors that each build their lens) and a steady state
(first -> last batch done; its images per second is what a long survey sees).
Printed per executor (median over rounds): wall time, steady-state images per
second and its ratio to local, start-up, and Ray's overhead per batch (extra
steady-state seconds per image against local, times the batch size it ran). Then an estimate of a survey of ImageNet val
(50 000 images) x N checkpoints computed from these numbers. Every executor uses
the whole machine: local with all CPUs as torch threads, Ray with 1 actor x all
CPUs and with 2 actors x half each; ``--threads 1`` runs every process on one
thread instead (on a machine shared with other work, torch's threads wait on each
other and one thread is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitlens_widgets as vl
from vitlens_widgets.analysis import Job, Ray, run
from vitlens_widgets.analysis.identifiability import by_block_frame, identifiability_job
from vitlens_widgets.data.folders import ImageFolder

IMAGENET_VAL = 50_000


def write_images(root: Path, n: int) -> ImageFolder:
    data = vl.data.shapes(n, seed=2)
    for i, (image, label, mask) in enumerate(zip(data.images, data.labels, data.masks)):
        name = vl.data.CLASS_NAMES[label]
        for kind, pixels in (("images", image), ("masks", mask * np.uint8(255))):
            (root / kind / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / kind / name / f"{i:05d}.png")
    return vl.data.image_folder(root / "images", masks=root / "masks", classes=vl.data.CLASS_NAMES)


def build_lens(model: str, device: str) -> vl.Lens:
    if model == "demo":
        return vl.Lens.demo(device=device)
    return vl.Lens.from_timm(model, pretrained=False, num_classes=10, class_names=vl.data.CLASS_NAMES, device=device)


def _stamped_map(lens, state, batch, inner):
    out = inner(lens, state, batch)
    out["done_at"] = np.full(len(batch), time.time())
    return out


def _stamped_reduce(lens, columns, inner):
    frame = by_block_frame(inner(lens, columns), "resid")
    return frame, columns["done_at"]


def measure(lens: vl.Lens, folder: ImageFolder, batch_size: int, executor) -> dict[str, float]:
    job = identifiability_job(batch_size=batch_size)
    stamped = Job(
        map=partial(_stamped_map, inner=job.map),
        reduce=partial(_stamped_reduce, inner=job.reduce),
        desc=job.desc,
        batch_size=batch_size,
    )
    start = time.time()
    _, done_at = run(stamped, lens, folder, executor, progress=False)
    end = time.time()
    batches = np.unique(done_at)
    first_batch = int((done_at == batches[0]).sum())
    steady_s = batches[-1] - batches[0]
    return {
        "wall": end - start,
        "startup": batches[0] - start,
        "steady_rate": (len(done_at) - first_batch) / steady_s,
        "seconds_per_image": steady_s / (len(done_at) - first_batch),
        "mean_batch": len(done_at) / len(batches),
        "gather": end - batches[-1],
    }


def estimate_table(rate: float, startup_s: float, label: str) -> list[str]:
    """Hours for ImageNet val x N checkpoints on 1, 4 and 16 workers like the measured one (an estimate).

    Each worker runs one actor at the measured steady-state rate; every checkpoint pays the
    measured start-up once (actors start in parallel); scaling across workers is taken as
    linear, since the driver only gathers a few floats per image.
    """
    lines = [f"| checkpoints | 1 {label} | 4 {label} | 16 {label} |", "|---|---|---|---|"]
    for n in (1, 7, 30):
        cells = [f"{n * (IMAGENET_VAL / (rate * k) + startup_s) / 3600:.2f} h" for k in (1, 4, 16)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="demo, or a timm name (random weights, 10 classes)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: all CPUs)")
    args = p.parse_args()
    import ray

    cpus = os.cpu_count() or 1
    threads = args.threads or cpus
    torch.set_num_threads(threads)
    gpus = 1.0 if args.device.startswith("cuda") else 0.0
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    lens = build_lens(args.model, args.device)
    executors = {
        "local": "local",
        "ray, 1 actor": Ray(actors=1, num_cpus=threads, num_gpus=gpus),
        "ray, 2 actors": Ray(actors=2, num_cpus=args.threads or max(1, cpus // 2), num_gpus=gpus / 2),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in executors}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_images(Path(tmp), args.images)
        measure(lens, ImageFolder(folder.root, folder.files[: args.batch_size]), args.batch_size, "local")  # warm-up
        for _ in range(args.rounds):  # interleaved, so that a busy spell of the machine hits every executor
            for name, executor in executors.items():
                results[name].append(measure(lens, folder, args.batch_size, executor))
    ray.shutdown()
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    print(
        f"model {args.model} on {args.device}, {cpus} CPUs, {args.images} images, batch {args.batch_size}, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    local = med["local"]
    for name, m in med.items():
        print(
            f"{name:<14} wall {m['wall']:6.1f} s | steady {m['steady_rate']:7.1f} img/s = "
            f"{m['steady_rate'] / local['steady_rate']:4.2f}x local | start-up {m['startup']:5.1f} s | "
            f"overhead per batch {(m['seconds_per_image'] - local['seconds_per_image']) * m['mean_batch'] * 1000:7.1f} ms "
            f"(batches of {m['mean_batch']:.0f}) | "
            f"gather {m['gather'] * 1000:5.0f} ms"
        )
    for name, runs in results.items():
        print(f"  {name} per round: " + ", ".join(f"{r['steady_rate']:.1f} img/s" for r in runs))
    worker = "x GPU" if gpus else "x this machine"
    one = med["ray, 1 actor"]
    print(f"\nEstimate from the numbers above: identifiability survey of ImageNet val x N checkpoints of {args.model}")
    print(
        f"({one['steady_rate']:.1f} img/s per worker in steady state, {one['startup']:.0f} s start-up per checkpoint)"
    )
    print("\n".join(estimate_table(one["steady_rate"], one["startup"], worker)))


if __name__ == "__main__":
    main()
