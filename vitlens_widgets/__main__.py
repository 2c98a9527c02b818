"""The main demo: the bundled ViT, read in class embedding space, offline.

    python -m vitlens_widgets [--images 6] [--seed 2]

Loads the demo model, traces a few held-out images and prints, for each, the
prediction and how identifiable the true class is block by block: for the
[CLS] token, and for object and context patches (known exactly from the masks).
It ends with a token map of the last block.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .analysis.identifiability import token_groups
from .data.shapes import shapes
from .engine.lens import Lens

SHADES = " .:-=+*#%@"


def token_map(values: np.ndarray, on_object: np.ndarray) -> list[str]:
    """A text heat map of per-patch values in [0, 1]; object patches in brackets."""
    rows = []
    for r in range(values.shape[0]):
        cells = []
        for c in range(values.shape[1]):
            shade = SHADES[min(len(SHADES) - 1, int(values[r, c] * len(SHADES)))]
            cells.append(f"[{shade}]" if on_object[r, c] else f" {shade} ")
        rows.append("".join(cells))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--seed", type=int, default=2, help="data seed (2 = held-out images, never trained on)")
    args = p.parse_args(argv)

    started = time.perf_counter()
    lens = Lens.demo()
    print(f"loaded the demo model in {time.perf_counter() - started:.2f}s: {lens}\n")
    data = shapes(args.images, seed=args.seed)
    batch = lens.trace_batch(data.images)
    grid = lens.tokens.grid
    for i, trace in enumerate(batch):
        label = int(data.labels[i])
        groups = token_groups(lens, data.masks[i])
        ident = trace.identifiability(label, "resid")
        verdict = "right" if trace.prediction.index == label else "WRONG"
        print(
            f"image {i}: a {lens.class_names[label]} -> predicted {trace.prediction.name} "
            f"({trace.prediction.probability:.0%}, {verdict})"
        )
        print("  layer  [CLS]  object  context   (identifiability of the true class, 1 = top-1)")
        for layer in trace.layers("resid"):
            row = [ident[layer][groups[g]].mean() for g in ("cls", "object", "context")]
            print(f"  {layer:>5}  {row[0]:.2f}   {row[1]:.2f}    {row[2]:.2f}")
        last = ident[-1][lens.tokens.image_tokens].reshape(grid)
        print(f"  block {lens.depth} token map ([x] = object patch, denser = more identifiable):")
        on_object = groups["object"][lens.tokens.image_tokens].reshape(grid)
        for line in token_map(last, on_object):
            print("    " + line)
        print()
    accuracy = float((batch.predictions == data.labels).mean())
    print(f"{accuracy:.0%} of these {args.images} held-out images classified correctly.")
    print(
        "In Python: lens = vitlens_widgets.Lens.demo(); trace = lens.trace(image); trace.identifiability(cls, 'resid')"
    )


if __name__ == "__main__":
    main()
