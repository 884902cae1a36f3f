"""Multi-layer perceptron, as used for sinusoid regression in the MAML paper."""

from typing import Optional, Sequence

import flax.linen as nn
import jax

from metajax.models.base import FewShotModel
from metajax.types import Array


class MLP(FewShotModel):
  """ReLU MLP `in -> hidden... -> out`, split into `embed` and a `head`.

  Every metajax model has a submodule called `head` and the methods
  `embed(x) -> features` and `classify(features) -> outputs`, so that ANIL and
  the model-based learners can adapt or predict the head alone.

  Attributes:
    hidden: widths of the hidden layers (the MAML paper: 40, 40).
    out: output width.
  """
  hidden: Sequence[int] = (40, 40)
  out: int = 1

  def setup(self):
    self.layers = [nn.Dense(width) for width in self.hidden]
    self.head = nn.Dense(self.out)

  def embed(self, x: Array, mask: Optional[Array] = None) -> Array:
    del mask  # no statistics over the batch
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
    return x
