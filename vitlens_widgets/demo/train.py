"""Train the demo ViT on procedural textured shapes (CPU, a few minutes to an hour).

Reproduce the shipped weights from a clean checkout::

    python -m vitlens_widgets.demo.train --out vitlens_widgets/demo/demo_vit.safetensors

The recipe (all defaults of this script) is recorded in the model card
(``vitlens_widgets/demo/MODEL_CARD.md``), with its learning curves in
``training/logs/``. Seeds: training images come from data seed ``TRAIN_SEED``,
validation from ``VAL_SEED`` and the held-out test set from ``TEST_SEED``; none
of them overlap.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..data.shapes import CLASS_NAMES, shapes
from .model import ARCHITECTURE, build_demo_model, normalize

TRAIN_SEED = 0
VAL_SEED = 1
TEST_SEED = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps before the cosine decay")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--train-images", type=int, default=60_000)
    p.add_argument("--val-images", type=int, default=1_000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="torch seed (init, batches, augmentation)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--depth", type=int, default=ARCHITECTURE["depth"], help="number of blocks")
    p.add_argument("--width", type=int, default=ARCHITECTURE["embed_dim"], help="embedding width")
    p.add_argument("--heads", type=int, default=ARCHITECTURE["num_heads"], help="attention heads per block")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bfloat16 autocast")
    p.add_argument("--out", type=Path, default=Path("demo_vit.safetensors"))
    p.add_argument("--log", type=Path, default=None, help="JSON-lines learning curve (default: next to --out)")
    return p.parse_args(argv)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving flips and quarter turns (objects are rotated at random anyway)."""
    if torch.rand((), generator=generator) < 0.5:
        x = x.flip(-1)
    k = int(torch.randint(0, 4, (), generator=generator))
    return torch.rot90(x, k, dims=(-2, -1))


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on weight matrices, none on biases, norms or the position embedding."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(normalize(images[i : i + batch_size]))
        correct += int((logits.argmax(-1) == labels[i : i + batch_size]).sum())
    model.train()
    return correct / len(labels)


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    train_set = shapes(args.train_images, seed=TRAIN_SEED)
    val_set = shapes(args.val_images, seed=VAL_SEED)
    images, labels = torch.from_numpy(train_set.images), torch.from_numpy(train_set.labels)
    val_images, val_labels = torch.from_numpy(val_set.images), torch.from_numpy(val_set.labels)
    print(f"generated {len(labels)} training images in {time.perf_counter() - started:.1f}s", flush=True)

    architecture = {**ARCHITECTURE, "depth": args.depth, "embed_dim": args.width, "num_heads": args.heads}
    model = build_demo_model(**architecture)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr)
    log_path = args.log or args.out.with_suffix(".log.jsonl")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    running_loss, running_correct, seen = 0.0, 0, 0
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        idx = torch.randint(0, len(labels), (args.batch_size,), generator=generator)
        x = augment(normalize(images[idx]), generator)
        y = labels[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running_loss += float(loss.detach()) * len(y)
        running_correct += int((logits.argmax(-1) == y).sum())
        seen += len(y)
        last = step + 1 == args.steps
        if (step + 1) % args.eval_every == 0 or last:
            record = {
                "step": step + 1,
                "seconds": round(time.perf_counter() - started, 1),
                "lr": round(optimizer.param_groups[0]["lr"], 7),
                "train_loss": round(running_loss / seen, 4),
                "train_acc": round(running_correct / seen, 4),
                "val_acc": round(accuracy(model, val_images, val_labels), 4),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps(record), flush=True)
            running_loss, running_correct, seen = 0.0, 0, 0
    log.close()
    save_weights(model, args.out, architecture, meta={"recipe": json.dumps({k: str(v) for k, v in vars(args).items()})})
    return record


def save_weights(
    model: torch.nn.Module, path: Path, architecture: dict | None = None, meta: dict[str, str] | None = None
) -> None:
    """Store the state dict as float16 safetensors with the architecture in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "architecture": json.dumps(architecture or ARCHITECTURE),
        "class_names": json.dumps(list(CLASS_NAMES)),
        **(meta or {}),
    }
    save_file(tensors, str(path), metadata=metadata)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    record = train(args)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); final val accuracy {record['val_acc']:.3f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
