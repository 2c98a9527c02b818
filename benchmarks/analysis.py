"""Dataset-analysis throughput against bare timm forward passes on the same batches.

    .venv/bin/python benchmarks/analysis.py [--images 1024] [--batch-size 64]

Both sides see the same demo images; the bare side gets them already as a
normalised tensor (the best case for it). Printed per analysis: images per
second, the forward passes it needs per image, and the ratio of its forward-pass
throughput (images x passes per second) to the bare one's. The issue's target is
a ratio of at least 0.8 for every analysis. Permutation tests are switched off
(``n_permutations=1``): they run after the stream, not in it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vitlens_widgets as vl
from vitlens_widgets.analysis import (
    attention_perturbation_test,
    block_change_rate,
    context_removal,
    identifiability_by_block,
    identifiability_vs_random,
    key_value_agreement,
    probe_ranked_removal,
    random_init_lens,
    sublayer_contributions,
    sublayer_gain_by_location,
)
from vitlens_widgets.analysis.probe_ranking import FRACTIONS
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

    b = dict(batch_size=args.batch_size, progress=False)
    t = dict(n_permutations=1, **b)
    random_lens = random_init_lens(lens)
    probe_train = vl.data.shapes(100, seed=5)
    runs = {  # name -> (forward passes per image, run)
        "bare timm forward": (1, bare),
        "identifiability_by_block": (1, lambda: identifiability_by_block(lens, data, **b)),
        "sublayer_contributions": (1, lambda: sublayer_contributions(lens, data, **b)),
        "identifiability_vs_random": (2, lambda: identifiability_vs_random(lens, data, random_lens=random_lens, **t)),
        "context_removal": (3, lambda: context_removal(lens, data, **t)),
        "sublayer_gain_by_location": (1, lambda: sublayer_gain_by_location(lens, data, **t)),
        "block_change_rate": (1, lambda: block_change_rate(lens, data, **b)),
        "attention_perturbation_test": (3, lambda: attention_perturbation_test(lens, data, **t)),
        "key_value_agreement (code)": (1, lambda: key_value_agreement(lens, data, "attn", definition="code", **t)),
        # 1 traced pass + 3 orders x 2 directions x 9 fractions with tokens removed
        "probe_ranked_removal": (55, lambda: probe_ranked_removal(lens, probe_train, data, fractions=FRACTIONS, **t)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _, fn in runs.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, (_, fn) in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    bare_rate = args.images / statistics.median(times["bare timm forward"])
    print(f"demo model, {args.images} images, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for name, elapsed in times.items():
        passes = runs[name][0]
        rate = args.images / statistics.median(elapsed)
        print(
            f"{name:<30} {rate:8.0f} img/s  {passes:3d} pass(es)  pass ratio to bare {rate * passes / bare_rate:5.2f}x"
        )


if __name__ == "__main__":
    main()
