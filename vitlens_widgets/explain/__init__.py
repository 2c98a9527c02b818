"""Relevance maps: which image parts matter for a class (class-space gradients and baselines)."""

from .relevance import METHODS, SIGNED_METHODS, Relevance, class_space_per_block, relevance

__all__ = ["METHODS", "SIGNED_METHODS", "Relevance", "class_space_per_block", "relevance"]
