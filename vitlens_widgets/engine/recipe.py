"""How to build a lens again in another process: a small, picklable description of its model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LensRecipe:
    """Everything needed to rebuild a :class:`~vitlens_widgets.engine.lens.Lens` on a Ray worker.

    ``source`` is ``"demo"`` (the bundled model), ``"timm"`` (``name`` + ``kwargs``,
    weights from ``checkpoint_path`` or the hub when ``pretrained``) or ``"model"``
    (a model instance carried whole, for lenses built with ``Lens(model)``).
    :meth:`Lens.from_timm` and :meth:`Lens.demo` record theirs as ``lens.recipe``.

    Example:
        >>> recipe = LensRecipe.of(vl.Lens.from_timm("vit_base_patch16_224", checkpoint_path="w.safetensors"))
        >>> lens = recipe.build(device="cuda")  # the same lens, on a worker's GPU
    """

    source: str
    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None
    pretrained: bool = True
    class_names: tuple[str, ...] | None = None
    model: nn.Module | None = None

    @classmethod
    def timm(
        cls,
        name: str,
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike | None = None,
        class_names: Any = None,
        **kwargs: Any,
    ) -> LensRecipe:
        """A timm model by name (what :meth:`Lens.from_timm` records).

        Example:
            >>> LensRecipe.timm("deit_small_patch16_224", checkpoint_path="/data/deit_s.pth").build()
        """
        path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        names = None if class_names is None else tuple(class_names)
        return cls("timm", name, dict(kwargs), path, pretrained, names)

    @classmethod
    def of(cls, lens: Any) -> LensRecipe:
        """The lens's own recipe, else one that carries its model (moved to the CPU) and class names.

        A lens of randomly initialised timm weights also travels with its model, so every worker has the same weights.

        Example:
            >>> LensRecipe.of(vl.Lens.demo()).source
            'demo'
        """
        recipe = getattr(lens, "recipe", None)
        if recipe is not None and not recipe.random_weights:
            return recipe
        model = lens.model if lens.device.type == "cpu" else _cpu_copy(lens.model)
        return cls("model", class_names=tuple(lens.class_names), model=model)

    @property
    def random_weights(self) -> bool:
        """Whether building draws fresh random weights (a timm model without pretrained or local weights).

        Such a recipe would give every worker a different model, so :meth:`of` carries the model instead.

        Example:
            >>> LensRecipe.timm("vit_tiny_patch16_224", pretrained=False).random_weights
            True
        """
        return self.source == "timm" and not self.pretrained and self.checkpoint_path is None

    def build(self, device: str | torch.device = "cpu") -> Any:
        """A fresh lens from this recipe, on ``device``.

        Example:
            >>> lens = LensRecipe("demo").build()
        """
        from .lens import Lens

        if self.source == "demo":
            return Lens.demo(device=device)
        if self.source == "timm":
            return Lens.from_timm(
                self.name,
                pretrained=self.pretrained,
                checkpoint_path=self.checkpoint_path,
                class_names=self.class_names,
                device=device,
                **self.kwargs,
            )
        if self.source == "model" and self.model is not None:
            return Lens(self.model, class_names=self.class_names, device=device)
        raise ValueError(
            f"a lens recipe's source must be 'demo', 'timm' or 'model' (with a model), got {self.source!r}"
        )


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu")
