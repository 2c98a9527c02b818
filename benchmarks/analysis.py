"""Dataset-analysis throughput against bare timm forward passes on the same batches.

    .venv/bin/python benchmarks/analysis.py [--images 1024] [--batch-size 64]

Both sides see the same demo images; the bare side gets them already as a
normalised tensor (the best case for it). Printed: images per second of each,
and the ratio (analysis / bare), for identifiability_by_block (one forward
pass per image) and sublayer_contributions (one pass plus the mid-block readout).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vitlens_widgets as vl
from vitlens_widgets.analysis import identifiability_by_block, sublayer_contributions
from vitlens_widgets.demo.model import normalize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    lens = vl.Lens.demo()
    data = vl.data.shapes(args.images, seed=2)
    x = normalize(torch.from_numpy(data.images))

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(x), args.batch_size):
                lens.model(x[i : i + args.batch_size])

    runs = {
        "bare timm forward": bare,
        "identifiability_by_block": lambda: identifiability_by_block(
            lens, data, batch_size=args.batch_size, progress=False
        ),
        "sublayer_contributions": lambda: sublayer_contributions(
            lens, data, batch_size=args.batch_size, progress=False
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    bare_rate = args.images / statistics.median(times["bare timm forward"])
    print(f"demo model, {args.images} images, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for name, t in times.items():
        rate = args.images / statistics.median(t)
        print(f"{name:<26} {rate:8.0f} img/s   ratio to bare {rate / bare_rate:5.2f}x")


if __name__ == "__main__":
    main()
