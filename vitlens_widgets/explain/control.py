"""The relevance diagnosis's control: does the class-space gradient add anything over [CLS]'s attention alone?

Compares, on the same images and perturbation test, the paper's map
(``class_space``), raw [CLS] attention summed over heads and blocks
(``attention``) and attention times minus the gradient (``attention_x_gradient``),
with paired per-image intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluate import DIRECTIONS

CONTRASTS = (
    ("attention", "class_space"),
    ("attention_x_gradient", "class_space"),
    ("attention_x_gradient", "attention"),
)


def paired_auc_gap(per_image: dict[str, np.ndarray], name: str, baseline: str) -> dict[str, tuple[float, float]]:
    """Per direction: mean per-image AUC of ``name`` minus ``baseline`` and its 95% half-width (normal approximation).

    ``per_image[name]`` is bool ``[images, 2, fractions]`` from :func:`~vitlens_widgets.explain.evaluate.score_maps`.
    """
    out = {}
    for d, direction in enumerate(DIRECTIONS):
        gap = per_image[name][:, d].mean(-1) - per_image[baseline][:, d].mean(-1)
        out[direction] = (float(gap.mean()), float(1.96 * gap.std(ddof=1) / np.sqrt(len(gap))))
    return out


def control_table(per_image: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per contrast: the paired AUC gaps (negative: higher is better; positive: lower is better)."""
    rows = []
    for name, baseline in CONTRASTS:
        gaps = paired_auc_gap(per_image, name, baseline)
        rows.append(
            {
                "map": name,
                "against": baseline,
                "negative_gap": f"{gaps['negative'][0]:+.3f} ± {gaps['negative'][1]:.3f}",
                "positive_gap": f"{gaps['positive'][0]:+.3f} ± {gaps['positive'][1]:.3f}",
            }
        )
    return pd.DataFrame(rows)


def gradient_effect(per_image: dict[str, np.ndarray]) -> dict[str, str]:
    """Per direction: attention × gradient against attention alone, ``"better"``, ``"worse"`` or ``"same"``.

    Better or worse when the 95% interval of the paired AUC gap is clear of 0 (negative curve: a higher AUC is
    better; positive curve: a lower one).
    """
    out = {}
    for direction, (gap, half) in paired_auc_gap(per_image, "attention_x_gradient", "attention").items():
        gain = gap if direction == "negative" else -gap
        out[direction] = "better" if gain - half > 0 else "worse" if gain + half < 0 else "same"
    return out


def gradient_finding(per_image: dict[str, np.ndarray]) -> str:
    """The answer to "does the gradient add anything over attention alone?", with the paired gaps."""
    effects = gradient_effect(per_image)
    gaps = paired_auc_gap(per_image, "attention_x_gradient", "attention")
    words = {"better": "better", "worse": "worse", "same": "no measurable difference"}
    detail = "; ".join(f"{d} curve: {words[e]} ({gaps[d][0]:+.3f} ± {gaps[d][1]:.3f})" for d, e in effects.items())
    better = [d for d, e in effects.items() if e == "better"]
    if len(better) == len(effects):
        answer = "Yes, on both curves"
    elif better:
        answer = f"Only on the {better[0]} curve"
    else:
        answer = "No"
    return f"{answer}: attention × gradient against attention alone, {detail}."


def control_markdown(per_image: dict[str, np.ndarray], summary: pd.DataFrame) -> str:
    """The control section of docs/relevance.md, worded from the measured numbers."""
    from ..analysis.report import markdown_table

    auc = summary.set_index("method")
    return "\n".join(
        [
            "\n## Control: [CLS] attention alone\n",
            "Raw [CLS] attention to each patch, summed over heads and blocks, ranks the patches without any "
            "gradient; attention × gradient weights each head's attention by minus the class-space gradient. Gaps "
            "are mean per-image AUC differences with 95% intervals (negative curve: higher is better; positive: "
            "lower is better).\n",
            markdown_table(
                auc.loc[
                    ["class_space", "attention", "attention_x_gradient", "random"],
                    ["auc_negative", "auc_positive", "pointing_game", "iou"],
                ].reset_index()
            ),
            "",
            markdown_table(control_table(per_image)),
            f"\n**Does the gradient add anything over attention?** {gradient_finding(per_image)}",
        ]
    )
