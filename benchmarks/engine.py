"""Engine speed against a bare timm forward pass, measured side by side in one run.

    .venv/bin/python benchmarks/engine.py [--model vit_base_patch16_224] [--batches 1 32] [--rounds N]

For each batch size, the three measurements are interleaved round by round and
the median of each is reported, so machine noise hits all of them alike. Short
measurements get more rounds (about 12 s of bare forward passes, at least 7).

* ``bare``: ``model(x)`` on preprocessed tensors (timm's own forward).
* ``(a)``: ``lens.trace_batch(x)`` + identifiability of one class for every layer
  and token of the residual stream.
* ``(b)``: ``lens.trace_batch(x)`` + all three sites projected.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import time

import timm
import torch

import vitlens_widgets as vl


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=None, help="rounds per batch size (default: adaptive)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return p.parse_args()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    model: torch.nn.Module, lens: vl.Lens, batch_size: int, rounds: int | None, cls: int = 0
) -> dict[str, float]:
    """Median seconds of the bare forward, (a) and (b), interleaved round by round."""
    x = torch.randn(batch_size, 3, *lens.preprocessor.input_size)
    tensors = list(x)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    def resid_identifiability() -> None:
        lens.trace_batch(tensors).identifiability(cls, "resid")

    def all_sites() -> None:
        batch = lens.trace_batch(tensors)
        for site in vl.SITES:
            batch.logits(site)

    runs = {"bare": bare, "a": resid_identifiability, "b": all_sites}
    for fn in runs.values():  # warm-up
        fn()
    if rounds is None:
        rounds = min(60, max(7, math.ceil(12.0 / timed(bare))))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    lens = vl.Lens(model, cache_size=0)
    print(
        f"{args.model} (random init), torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(f"{'batch':>5} {'bare s':>9} {'(a) s':>9} {'(b) s':>9} {'(a)/bare':>9} {'(b)/bare':>9}")
    for batch_size in args.batches:
        med = measure(model, lens, batch_size, args.rounds)
        print(
            f"{batch_size:>5} {med['bare']:>9.4f} {med['a']:>9.4f} {med['b']:>9.4f} "
            f"{med['a'] / med['bare']:>8.3f}x {med['b'] / med['bare']:>8.3f}x"
        )
    trace = lens.trace(torch.randn(3, *lens.preprocessor.input_size))
    for site in vl.SITES:
        trace.logits(site)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"memory of one fully projected trace (hidden states + logits of all three sites): {trace.nbytes / 2**20:.1f} MiB"
    )
    print(f"process peak RSS over the whole run: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
