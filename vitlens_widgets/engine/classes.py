"""Class names: where they come from, and resolving a user's class to an index."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
from torch import nn

ClassLike = int | np.integer | str


def default_class_names(model: nn.Module, num_classes: int) -> list[str]:
    """Names from the model's pretrained config, timm's ImageNet metadata, or ``class 0..C-1``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    if names is not None and len(names) == num_classes:
        return [str(n) for n in names]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset is not None:
            info = ImageNetInfo(subset)
            if info.num_classes() == num_classes:
                return [info.index_to_description(i) for i in range(num_classes)]
    except Exception:  # metadata is a nicety; never fail a lens over it
        pass
    return [f"class {i}" for i in range(num_classes)]


class ClassNames(Sequence):
    """An immutable list of class names that resolves names (and synonyms) to indices.

    ImageNet descriptions such as ``"tench, Tinca tinca"`` resolve from any
    comma-separated synonym, case-insensitively.

    Example:
        >>> names = ClassNames(["tench, Tinca tinca", "goldfish, Carassius auratus"])
        >>> names.index("Goldfish"), names.short(0)
        (1, 'tench')
    """

    def __init__(self, names: Sequence[str]):
        self._names = tuple(str(n) for n in names)
        lookup: dict[str, int] = {}
        for i, name in enumerate(self._names):
            for key in [name, *name.split(",")]:
                lookup.setdefault(key.strip().lower(), i)
        self._lookup = lookup

    def __getitem__(self, i):  # type: ignore[override]
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        head = ", ".join(repr(n) for n in self._names[:5])
        return f"ClassNames([{head}{', ...' if len(self) > 5 else ''}], n={len(self)})"

    def short(self, i: int) -> str:
        """The first synonym of class ``i`` (``"tench"`` for ``"tench, Tinca tinca"``)."""
        return self._names[i].split(",")[0].strip()

    def index(self, cls: ClassLike) -> int:  # type: ignore[override]
        """The index of ``cls`` (an index or a name); ``ValueError`` with suggestions otherwise."""
        if isinstance(cls, (bool, np.bool_)):
            raise TypeError("a class must be an index or a name, not a bool")
        if isinstance(cls, (int, np.integer)):
            i = int(cls)
            if not 0 <= i < len(self):
                raise ValueError(
                    f"class index {i} is out of range: this model has {len(self)} classes (0..{len(self) - 1})"
                )
            return i
        if isinstance(cls, str):
            key = cls.strip().lower()
            if key in self._lookup:
                return self._lookup[key]
            raise ValueError(f"unknown class {cls!r}.{self._suggest(key)}")
        raise TypeError(f"a class must be an index or a name, got {type(cls).__name__}")

    def _suggest(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self._lookup), n=5, cutoff=0.6)
        contains = [k for k in self._lookup if key and key in k][:5]
        options = list(dict.fromkeys(contains + close))[:5]
        return f" Did you mean: {', '.join(repr(o) for o in options)}?" if options else ""
