"""Numbers for the demo model card: held-out accuracy and identifiability per block.

    python -m vitlens_widgets.demo.evaluate [--images 1000] [--weights PATH] [--json out.json]

Held-out images come from data seed ``TEST_SEED`` (never used in training or validation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.identifiability import identifiability_by_block
from ..data.shapes import shapes
from ..engine.lens import Lens
from . import load_demo_model
from .train import TEST_SEED


def held_out_accuracy(lens: Lens, n: int = 1000, seed: int = TEST_SEED, progress: bool = False) -> float:
    """Top-1 accuracy of the model's own output on ``n`` fresh images."""
    data = shapes(n, seed=seed)
    correct = 0
    for batch_index, batch in enumerate(lens.iter_batches(data.images, batch_size=250, progress=progress)):
        start = batch_index * 250
        correct += int((batch.predictions == data.labels[start : start + len(batch)]).sum())
    return correct / n


def block_table(lens: Lens, n: int = 1000, seed: int = TEST_SEED, progress: bool = False) -> pd.DataFrame:
    """Identifiability and top-1 rate per residual-stream layer for [CLS], object and context tokens."""
    df = identifiability_by_block(lens, shapes(n, seed=seed), site="resid", batch_size=250, progress=progress)
    wide = df.pivot(index="layer", columns="tokens", values=["identifiability", "top1_rate"])
    wide.columns = [f"{metric}:{group}" for metric, group in wide.columns]
    return wide.reset_index()


def block_table_markdown(table: pd.DataFrame) -> str:
    groups = ["cls", "object", "context", "image"]
    header = (
        "| layer | "
        + " | ".join(f"ident. {g}" for g in groups)
        + " | "
        + " | ".join(f"top-1 {g}" for g in groups)
        + " |"
    )
    lines = [header, "|" + "---|" * (1 + 2 * len(groups))]
    for _, row in table.iterrows():
        label = "0 (embeddings)" if row["layer"] == 0 else f"{int(row['layer'])}"
        cells = [f"{row[f'identifiability:{g}']:.3f}" for g in groups] + [
            f"{row[f'top1_rate:{g}']:.3f}" for g in groups
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--weights", type=Path, default=None, help="a safetensors file from demo.train (default: shipped)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    lens = Lens(load_demo_model(args.weights))
    accuracy = held_out_accuracy(lens, args.images, progress=True)
    table = block_table(lens, args.images, progress=True)
    print(f"held-out accuracy on {args.images} images (data seed {TEST_SEED}): {accuracy:.4f}\n")
    print(block_table_markdown(table))
    if args.json:
        args.json.write_text(
            json.dumps({"accuracy": accuracy, "images": args.images, "table": table.to_dict("records")}, indent=1)
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
