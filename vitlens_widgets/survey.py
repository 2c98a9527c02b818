"""Survey several models on one labelled image folder: identifiability by block and object vs context, side by side.

    python -m vitlens_widgets.survey --models NAME[,NAME...] --data PATH [--masks PATH]
                                     [--executor ray] [--actors N] [--out DIR]

A model is ``demo`` (the bundled ViT), a timm name (hub weights: needs internet or a
warm cache), or ``NAME=PATH`` (a timm architecture with a local ``.safetensors``/``.pth``
checkpoint). Writes ``DIR/identifiability.csv`` (the tidy table of
:func:`~vitlens_widgets.analysis.identifiability_by_block` with a ``model`` column),
``DIR/object_context.csv`` (with masks) and ``DIR/survey.svg``, the cross-model figure:
identifiability of the true class against relative depth, one line per model, one
panel per token group.
"""

from __future__ import annotations

import argparse
import html
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .analysis.identifiability import by_block_frame, object_context_frame, per_image_identifiability
from .analysis.runner import Ray
from .data.folders import image_folder
from .engine.lens import Lens

MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
GROUPS = ("cls", "image", "object", "context")


def load_lens(spec: str, device: str = "cpu") -> Lens:
    """A lens from a survey model spec: ``demo``, a timm name, or ``NAME=CHECKPOINT``.

    Example:
        >>> load_lens("vit_base_patch16_224=/data/vit_b16.safetensors")
    """
    if spec == "demo":
        return Lens.demo(device=device)
    name, _, checkpoint = spec.partition("=")
    return Lens.from_timm(name, checkpoint_path=checkpoint or None, device=device)


def survey(
    models: Sequence[str],
    data: str | Path,
    masks: str | Path | None = None,
    executor: str | Ray = "local",
    n_permutations: int = 10_000,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Identifiability by block (and, with masks, the object vs context test) of each model on one image folder.

    Folders name classes by the models' class names, ImageNet synset ids or numbers
    (see :func:`vitlens_widgets.data.image_folder`). One forward pass per image and
    model feeds both tables. Returns ``(by_block, object_context)``, each with a
    ``model`` column and a ``depth`` column (blocks); ``object_context`` is ``None``
    without masks.

    Example:
        >>> by_block, object_context = survey(["demo"], "shapes/images", masks="shapes/masks")
    """
    by_block, tests = [], []
    for spec in models:
        lens = load_lens(spec)
        folder = image_folder(data, masks=masks, classes=lens.class_names)
        per_image = per_image_identifiability(lens, folder, batch_size=batch_size, progress=progress, executor=executor)
        by_block.append(by_block_frame(per_image, "resid").assign(model=spec, depth=lens.depth))
        if masks is not None:
            tests.append(object_context_frame(per_image, n_permutations).assign(model=spec, depth=lens.depth))
    first = ["model", "depth"]
    table = pd.concat(by_block, ignore_index=True)
    table = table[first + [c for c in table.columns if c not in first]]
    if not tests:
        return table, None
    test = pd.concat(tests, ignore_index=True)
    return table, test[first + [c for c in test.columns if c not in first]]


def survey_svg(by_block: pd.DataFrame, width: int = 260, height: int = 220) -> str:
    """The cross-model figure as SVG text: identifiability against relative depth (layer / blocks), per token group.

    Example:
        >>> Path("survey.svg").write_text(survey_svg(survey(["demo"], "shapes/images")[0]))
    """
    groups = [g for g in GROUPS if g in set(by_block.tokens)]
    models = list(dict.fromkeys(by_block.model))
    pad, top, legend = 36, 28, 18 * len(models) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(groups)}" height="{height + legend}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width * len(groups)}" height="{height + legend}" fill="white"/>',
    ]
    plot_w, plot_h = width - pad - 10, height - top - pad
    for p, group in enumerate(groups):
        x0 = p * width + pad
        parts.append(f'<text x="{x0 + plot_w / 2}" y="16" text-anchor="middle" font-weight="bold">{group}</text>')
        parts.append(f'<rect x="{x0}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
        for tick in (0.0, 0.5, 1.0):
            y = top + plot_h * (1 - tick)
            parts.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{tick:.1f}</text>')
            parts.append(
                f'<text x="{x0 + plot_w * tick}" y="{top + plot_h + 14}" text-anchor="middle">{tick:.1f}</text>'
            )
        parts.append(f'<text x="{x0 + plot_w / 2}" y="{top + plot_h + 28}" text-anchor="middle">relative depth</text>')
        for m, model in enumerate(models):
            rows = by_block[(by_block.model == model) & (by_block.tokens == group)].sort_values("layer")
            if rows.empty:
                continue
            points = " ".join(
                f"{x0 + plot_w * layer / depth:.1f},{top + plot_h * (1 - value):.1f}"
                for layer, depth, value in zip(rows.layer, rows.depth, rows.identifiability)
            )
            colour = MODEL_COLOURS[m % len(MODEL_COLOURS)]
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for m, model in enumerate(models):
        y = height + 14 + 18 * m
        colour = MODEL_COLOURS[m % len(MODEL_COLOURS)]
        parts.append(f'<line x1="{pad}" y1="{y - 4}" x2="{pad + 20}" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{pad + 26}" y="{y}">{html.escape(model)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="comma-separated: demo, timm names, or NAME=CHECKPOINT")
    p.add_argument("--data", required=True, type=Path, help="image folder: one subfolder per class")
    p.add_argument("--masks", type=Path, default=None, help="mask folder mirroring --data (PNG per image)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--actors", type=int, default=None, help="Ray actor pool size (default: one per GPU, else per CPU)")
    p.add_argument("--permutations", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("survey"))
    args = p.parse_args(argv)
    executor = Ray(actors=args.actors) if args.executor == "ray" else "local"
    start = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    by_block, object_context = survey(models, args.data, args.masks, executor, args.permutations, args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    by_block.to_csv(args.out / "identifiability.csv", index=False)
    written = ["identifiability.csv", "survey.svg"]
    if object_context is not None:
        object_context.to_csv(args.out / "object_context.csv", index=False)
        written.insert(1, "object_context.csv")
    (args.out / "survey.svg").write_text(survey_svg(by_block))
    print(f"{len(models)} model(s) in {time.perf_counter() - start:.1f} s; wrote {', '.join(written)} to {args.out}")
    last = by_block.loc[by_block.groupby(["model", "tokens"]).layer.idxmax()]
    print(last.pivot(index="model", columns="tokens", values="identifiability").round(3).to_string())


if __name__ == "__main__":
    main()
