"""Cost of a global class-space relevance map against a bare timm forward pass, side by side.

    .venv/bin/python benchmarks/explain.py [--model vit_base_patch16_224] [--rounds 5]

The map includes its own trace (one forward pass keeping every hidden state) and, per block,
the keys/values of that block's attention plus one small backward from the class logits to
the [CLS] attention row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import timm
import torch

import vitlens_widgets as vl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    lens = vl.Lens(model, cache_size=0)
    images = [
        np.random.default_rng(i).integers(0, 256, (*lens.preprocessor.input_size, 3), dtype=np.uint8)
        for i in range(args.rounds + 1)
    ]
    x = torch.stack([lens.prepare(im).tensor for im in images])

    def bare(i: int) -> None:
        with torch.inference_mode():
            model(x[i : i + 1])

    def class_space(i: int) -> None:
        vl.explain.relevance(lens, images[i], cls=0)

    times: dict[str, list[float]] = {"bare": [], "class_space": []}
    bare(0), class_space(0)  # warm-up
    for i in range(1, args.rounds + 1):
        for name, fn in (("bare", bare), ("class_space", class_space)):
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model} (random init), batch 1, {torch.get_num_threads()} threads")
    print(
        f"bare forward {med['bare']:.3f}s   global class-space map {med['class_space']:.3f}s   ratio {med['class_space'] / med['bare']:.2f}x"
    )


if __name__ == "__main__":
    main()
