"""Several models side by side: any dataset analysis over a dict or list of lenses, one DataFrame with a ``model`` column."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd

from ..engine.lens import Lens
from ..engine.recipe import random_init_lens as random_init_lens  # re-exported: vl.analysis.random_init_lens

Lenses = Lens | Mapping[str, Lens] | Sequence[Lens]
F = TypeVar("F", bound=Callable[..., Any])


def named_lenses(lenses: Lenses) -> dict[str, Lens] | None:
    """``{name: lens}`` for a dict or list of lenses (list items are named ``model 0``, ``model 1``...); None for one lens."""
    if isinstance(lenses, Lens):
        return None
    if isinstance(lenses, Mapping):
        named = dict(lenses)
    elif isinstance(lenses, Sequence) and not isinstance(lenses, str):
        named = {f"model {i}": lens for i, lens in enumerate(lenses)}
    else:
        raise TypeError(f"expected a Lens, a dict of lenses or a list of lenses, got {type(lenses).__name__}")
    if not named or not all(isinstance(lens, Lens) for lens in named.values()):
        raise TypeError("every model must be a vitlens_widgets Lens")
    return named


def over_models(analysis: F) -> F:
    """Let ``analysis(lens, ...)`` also take ``{name: lens}`` or ``[lens, ...]``.

    The analysis runs once per model with the same arguments; the DataFrames are
    concatenated with a leading ``model`` column. A single lens behaves as before
    (no ``model`` column). Analyses that return several DataFrames (a tuple) get
    the column on each.

    Example:
        >>> vl.analysis.identifiability_by_block({"demo": Lens.demo(), "random": random_lens}, data)
    """

    @functools.wraps(analysis)
    def run(lens: Lenses, *args: Any, **kwargs: Any) -> Any:
        named = named_lenses(lens)
        if named is None:
            return analysis(lens, *args, **kwargs)
        results = {name: analysis(one, *args, **kwargs) for name, one in named.items()}
        first = next(iter(results.values()))
        if isinstance(first, tuple):
            return tuple(_stack({n: r[i] for n, r in results.items()}) for i in range(len(first)))
        return _stack(results)

    return run  # type: ignore[return-value]


def _stack(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([df.assign(model=name) for name, df in frames.items()], ignore_index=True)[
        ["model", *next(iter(frames.values())).columns]
    ]
