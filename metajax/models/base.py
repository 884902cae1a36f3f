"""What every metajax model is: a body `embed(x)` and a head `classify(features)`."""

from typing import Optional

import flax.linen as nn

from metajax.types import Array


class FewShotModel(nn.Module):
  """A flax module with a submodule `head` (set in `setup`) and a method `embed`.

  ANIL adapts the head alone on features computed once, ProtoNets and the
  predictor use `embed` only, fine-tuning fits a new head on its features;
  `__call__` is the whole network.

  `embed` and `__call__` take `mask` (bool [n]): the rows of `x` whose
  activations make any statistic over the batch (batch norm); None: all rows.
  A model without such statistics ignores it.
  """

  def embed(self, x: Array, mask: Optional[Array] = None) -> Array:
    raise NotImplementedError

  def classify(self, features: Array) -> Array:
    return self.head(features)  # pytype: disable=attribute-error

  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    return self.classify(self.embed(x, mask))
