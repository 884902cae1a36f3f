"""ResNet-12, the MetaOptNet variant (Lee et al. 2019), without DropBlock.

Four residual blocks of 64, 160, 320 and 640 filters; each block is three
3x3 convolutions (no bias) with batch norm and leaky ReLU (slope 0.1), a 1x1
convolution with batch norm on the shortcut, a leaky ReLU after the sum, and a
2x2 max-pool. On 84x84 inputs the features are 5 x 5 x 640 = 16,000, flattened
as in MetaOptNet. Batch norm uses batch statistics (see `BatchStatNorm`).

References:
  Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable Convex
  Optimization", CVPR 2019.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax

from metajax.models.conv import Conv3x3, max_pool_2x2, norm_layer
from metajax.models.base import FewShotModel
from metajax.types import Array


def _leaky(x: Array) -> Array:
  return jax.nn.leaky_relu(x, 0.1)


class ResBlock(nn.Module):
  channels: int
  batch_norm: str = 'transductive'

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    norm = norm_layer(self.batch_norm)
    shortcut = norm()(nn.Dense(self.channels, use_bias=False)(x), mask=mask)  # 1x1 conv
    for i in range(3):
      x = norm()(Conv3x3(self.channels, use_bias=False)(x), mask=mask)
      if i < 2:
        x = _leaky(x)
    return max_pool_2x2(_leaky(x + shortcut))


class ResNet12(FewShotModel):
  """ResNet-12 with a linear head; `embed` gives the flattened features."""
  out: int = 5
  channels: Sequence[int] = (64, 160, 320, 640)
  batch_norm: str = 'transductive'  # or 'support' or 'tasknorm', as `Conv4.batch_norm`

  def setup(self):
    self.blocks = [ResBlock(c, self.batch_norm) for c in self.channels]
    self.head = nn.Dense(self.out)

  def embed(self, x: Array, mask: Optional[Array] = None) -> Array:
    for block in self.blocks:
      x = block(x, mask)
    return x.reshape(x.shape[:-3] + (-1,))
