"""Demo model and data: load time, generator speed and held-out accuracy.

    .venv/bin/python benchmarks/demo.py

* ``Lens.demo()`` in a fresh interpreter (imports included) and again warm;
* generating 1,000 images on one core (``OMP_NUM_THREADS=1``), median of 5;
* held-out accuracy on 1,000 images from the test seed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

COLD = """
import time
t = time.perf_counter()
import vitlens_widgets as vl
imported = time.perf_counter()
lens = vl.Lens.demo()
done = time.perf_counter()
print(f"{imported - t:.3f} {done - imported:.3f}")
"""


def main() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, env=env, check=True).stdout.split()
        for _ in range(3)
    ]
    imports = statistics.median(float(r[0]) for r in runs)
    loads = statistics.median(float(r[1]) for r in runs)
    print(
        f"Lens.demo() in a fresh interpreter: import {imports:.2f}s + load {loads:.2f}s = {imports + loads:.2f}s (median of 3)"
    )

    import torch

    torch.set_num_threads(1)
    import vitlens_widgets as vl
    from vitlens_widgets.demo.evaluate import held_out_accuracy

    started = time.perf_counter()
    lens = vl.Lens.demo()
    print(f"Lens.demo() warm: {time.perf_counter() - started:.3f}s")
    times = []
    for seed in range(5):
        started = time.perf_counter()
        vl.data.shapes(1000, seed=100 + seed)
        times.append(time.perf_counter() - started)
    print(f"vl.data.shapes(1000) on one core: {statistics.median(times):.2f}s (median of 5)")
    print(f"held-out accuracy (1,000 images, test seed): {held_out_accuracy(lens, 1000):.4f}")


if __name__ == "__main__":
    main()
