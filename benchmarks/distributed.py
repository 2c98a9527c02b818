"""Images per second of identifiability_by_block: local vs Ray Data with 1 and 2 actors, on the same image folder.

    .venv/bin/python benchmarks/distributed.py [--model demo] [--images 256,1024] [--batch-size 64] [--device cpu]

The images are demo images written once as PNG files to a temporary image folder
(with masks); every executor reads, crops and traces the same files. Each
executor runs at two dataset sizes, so that its wall time splits into a fixed
cost (Ray: planning the dataset and starting the actors, which each build their
lens) and a per-image cost (the slope). Printed: wall times, images per second
end to end and in steady state (1 / slope), steady-state throughput relative to
local, Ray's overhead per batch (the extra slope times the batch size), and an
estimate of a survey of ImageNet val (50 000 images) x N checkpoints computed from
these measurements. Every executor uses the whole machine: local runs with all
CPUs as torch threads, Ray with 1 actor x all CPUs and 2 actors x half each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitlens_widgets as vl
from vitlens_widgets.analysis import Ray, identifiability_by_block
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


def timed(lens: vl.Lens, folder: ImageFolder, n: int, batch_size: int, executor) -> float:
    subset = ImageFolder(folder.root, folder.files[:n])
    start = time.perf_counter()
    identifiability_by_block(lens, subset, batch_size=batch_size, progress=False, executor=executor)
    return time.perf_counter() - start


def estimate_table(rate: float, fixed_s: float, label: str) -> list[str]:
    """Hours for ImageNet val x N checkpoints on 1, 4 and 16 workers like the measured one (an estimate).

    Each worker runs one actor at the measured steady-state rate; every checkpoint pays the
    measured fixed cost once (actors start in parallel); scaling across workers is taken
    as linear, since the driver only gathers a few floats per image.
    """
    lines = [f"| checkpoints | 1 {label} | 4 {label}s | 16 {label}s |", "|---|---|---|---|"]
    for n in (1, 7, 30):
        cells = [f"{n * (IMAGENET_VAL / (rate * k) + fixed_s) / 3600:.2f} h" for k in (1, 4, 16)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="demo, or a timm name (random weights, 10 classes)")
    p.add_argument("--images", default="256,1024", help="two dataset sizes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    import ray

    small, large = (int(n) for n in args.images.split(","))
    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    gpus = 1.0 if args.device.startswith("cuda") else 0.0
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    lens = build_lens(args.model, args.device)
    executors = {
        "local": "local",
        "ray, 1 actor": Ray(actors=1, num_cpus=cpus, num_gpus=gpus),
        "ray, 2 actors": Ray(actors=2, num_cpus=max(1, cpus // 2), num_gpus=gpus / 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_images(Path(tmp), large)
        timed(lens, folder, args.batch_size, args.batch_size, "local")  # warm-up
        walls = {
            name: [timed(lens, folder, n, args.batch_size, ex) for n in (small, large)]
            for name, ex in executors.items()
        }
    ray.shutdown()
    print(f"model {args.model} on {args.device}, {cpus} CPUs, batch {args.batch_size}, images {small} and {large}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    fits = {}
    for name, (t_small, t_large) in walls.items():
        slope = (t_large - t_small) / (large - small)
        fits[name] = (slope, t_small - slope * small)
    local_slope = fits["local"][0]
    for name, (t_small, t_large) in walls.items():
        slope, fixed = fits[name]
        print(
            f"{name:<14} wall {t_small:6.2f} s / {t_large:6.2f} s | end to end {large / t_large:7.1f} img/s | "
            f"steady {1 / slope:7.1f} img/s = {local_slope / slope:4.2f}x local | fixed {fixed:5.1f} s | "
            f"overhead per batch {(slope - local_slope) * args.batch_size * 1000:6.1f} ms"
        )
    worker = "GPU" if gpus else "machine like this"
    rate, fixed = 1 / fits["ray, 1 actor"][0], max(0.0, fits["ray, 1 actor"][1])
    print(f"\nEstimate from the numbers above: identifiability survey of ImageNet val x N checkpoints of {args.model}")
    print(f"({rate:.1f} img/s per worker in steady state, {fixed:.0f} s fixed per checkpoint)")
    print("\n".join(estimate_table(rate, fixed, worker)))


if __name__ == "__main__":
    main()
