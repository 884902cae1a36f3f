"""Flax models. Each has a submodule `head` and methods `embed` and `classify`."""

from metajax.models.mlp import MLP

__all__ = ['MLP']
