"""How to build a lens again in another process: a small, picklable description of its model."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, replace
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
    ``random_init_seed``: build that lens, then replace it by its random-init copy
    (:func:`random_init_lens`, drawn on the CPU: the same weights on every worker and device).

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
    random_init_seed: int | None = None

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
        lens = self._build_trained(device)
        return lens if self.random_init_seed is None else random_init_lens(lens, self.random_init_seed)

    def _build_trained(self, device: str | torch.device) -> Any:
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
    return copy.deepcopy(model).to("cpu")


def random_init_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with the same architecture and timm's default random initialisation.

    The weights are drawn on the CPU from ``seed`` and then moved to the model's device,
    so a seed gives the same weights on every device.

    Example:
        >>> random_model = random_init_copy(vl.Lens.demo().model, seed=0)
    """
    device = next(model.parameters()).device
    clone = copy.deepcopy(model) if device.type == "cpu" else _cpu_copy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(clone, "init_weights"):
            clone.init_weights()
        else:
            for module in clone.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return clone.to(device).eval()


def random_init_lens(lens: Any, seed: int = 0) -> Any:
    """A lens over a copy of ``lens``'s model with timm's random initialisation (same architecture, class names).

    Its recipe is the trained lens's recipe with ``random_init_seed=seed`` (so Ray actors
    rebuild it instead of receiving its weights), when the trained lens has a recipe of fixed weights.

    Example:
        >>> vl.analysis.identifiability_by_block({"trained": lens, "random init": random_init_lens(lens)}, data)
    """
    from .lens import Lens

    random = Lens(random_init_copy(lens.model, seed), class_names=list(lens.class_names), device=lens.device)
    trained = lens.recipe
    if trained is not None and not trained.random_weights and trained.random_init_seed is None:
        random.recipe = replace(trained, random_init_seed=seed)
    return random
