"""Flax models. Each has a submodule `head` and methods `embed` and `classify`."""

from metajax.models.conv import BatchStatNorm, Conv4
from metajax.models.mlp import MLP
from metajax.models.resnet import ResNet12

__all__ = ['BatchStatNorm', 'Conv4', 'MLP', 'ResNet12']
