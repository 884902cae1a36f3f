"""Conv4, the four-block convolutional network of MAML and Prototypical Networks."""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.models.base import FewShotModel
from metajax.models.tasknorm import TaskNormI
from metajax.types import Array


class BatchStatNorm(nn.Module):
  """Batch normalisation that always uses the statistics of the batch at hand.

  This is the usual (transductive) setting of MAML: the support set is
  normalised with its own statistics during adaptation and the query set with
  its own, so adaptation carries no mutable running averages and the model is
  a pure function `apply(params, x)`. Learnable per-channel scale and bias.

  The variance is E[x^2] - E[x]^2 (flax's `BatchNorm` default,
  `use_fast_variance`): both moments come from one pass over the activations,
  which saves a pass over memory on a memory-bound CPU (docs/benchmarks.md).

  `channel_axis` (a call argument) is -1 for channels-last activations and 0
  for the channels-first output of `Conv3x3(..., channels_first_out=True)`.

  `mask` (a call argument, bool over the batch axes, e.g. [n]) picks the rows
  whose activations make the statistics; every row is normalised with them.
  Padding rows of a variable-size episode are left out this way, and so is a
  query set normalised with its support set's statistics (`batch_norm='support'`
  of the models). None: every row.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, channel_axis: int = -1, mask: Optional[Array] = None) -> Array:
    channel_axis %= x.ndim
    axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    channels = x.shape[channel_axis]
    if mask is None:
      mean, mean_square = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
    else:
      if channel_axis == x.ndim - 1:
        weights = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
      elif channel_axis == 0:
        weights = mask.reshape((1,) + mask.shape + (1,) * (x.ndim - mask.ndim - 1))
      else:
        raise ValueError(f'channel_axis={channel_axis}: a mask needs channels first or last')
      weights = weights.astype(x.dtype)
      count = jnp.sum(weights) * (x.size // (channels * mask.size))
      mean = jnp.sum(x * weights, axes) / count
      mean_square = jnp.sum(jnp.square(x) * weights, axes) / count
    var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
    scale = self.param('scale', nn.initializers.ones, (channels,), x.dtype)
    bias = self.param('bias', nn.initializers.zeros, (channels,), x.dtype)
    multiplier = jax.lax.rsqrt(var + self.epsilon) * scale
    shift = bias - mean * multiplier
    shape = [1] * x.ndim
    shape[channel_axis] = channels
    return x * multiplier.reshape(shape) + shift.reshape(shape)


def norm_layer(batch_norm: str) -> type[nn.Module]:
  """The normalisation layer of a model's `batch_norm` mode."""
  return TaskNormI if batch_norm == 'tasknorm' else BatchStatNorm


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, SAME padding, written as patches times a matrix.

  Same parameters as `nn.Conv(features, (3, 3), padding='SAME')` (a kernel
  [3, 3, in, out] and a bias) and the same outputs. Under `jax.vmap` with
  per-task weights (MAML's inner loop) an `nn.Conv` becomes one grouped
  convolution, which XLA's CPU backend runs far slower than a batched matrix
  product, and even one task's `lax.conv` kernel gradient (a convolution with
  a large window) is slow there; this form stays a matrix product (figures in
  docs/benchmarks.md).

  `channels_first_out=True` (for thin inputs: Conv4's first layer) returns the
  output channels-first, [features, ...batch, h, w], computed as
  kernel^T [out, 9 * in] times patches [9 * in, pixels]. Then the output
  gradient arrives as [out, pixels], the operand layout that XLA's CPU dot
  wants for the kernel gradient (contracting over pixels, the minor axis);
  channels-last, XLA transposes the whole output gradient of each query set
  inside the batch-norm backward fusion (docs/benchmarks.md).
  """
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array, channels_first_out: bool = False) -> Array:
    cin = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3, 3, cin, self.features),
                        x.dtype)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,), x.dtype)
            if self.use_bias else None)
    h, w = x.shape[-3], x.shape[-2]
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)])
    shifted = [padded[..., i:i + h, j:j + w, :] for i in range(3) for j in range(3)]
    if channels_first_out:
      patches = jnp.stack([jnp.moveaxis(s, -1, 0) for s in shifted]).reshape(9 * cin, -1)
      y = jnp.einsum('ko,kp->op', kernel.reshape(9 * cin, self.features), patches)
      y = y.reshape((self.features,) + x.shape[:-1])
      if bias is not None:
        y = y + bias.reshape((self.features,) + (1,) * (y.ndim - 1))
      return y
    if cin <= 3:
      patches = jnp.stack(shifted).reshape(9, -1, cin)
      y = jnp.einsum('kpc,kco->po', patches, kernel.reshape(9, cin, self.features))
      y = y.reshape(x.shape[:-1] + (self.features,))
    else:
      y = jnp.concatenate(shifted, -1) @ kernel.reshape(9 * cin, self.features)
    return y if bias is None else y + bias


def max_pool_2x2(x: Array) -> Array:
  """2x2 max-pool of `[..., H, W, C]`, stride 2, odd edges dropped (as `nn.max_pool`, VALID).

  Written as a reshape, not `reduce_window`: on XLA's CPU backend the
  latter's backward pass (select-and-scatter) is much dearer
  (docs/benchmarks.md). Each window's value is its first largest element
  (row-major order), selected through a one-hot mask of the argmax, and the
  gradient goes to that element alone, as in flax's and PyTorch's max-pool (a
  tied window's gradient is not shared). Not `.max()`, which JAX
  differentiates through the mask `x == max(x)`: compiled by XLA's CPU
  backend, inner steps through it differed from the same steps run eagerly
  for some small shapes, the losses moving by up to 0.07 between float64
  points 2e-9 apart (MAML++'s rolled inner scan on 4x4 inputs; on 8x8 three
  MAML steps unrolled, while the rolled scan agreed). An optimization barrier
  before the max did not help, so the cause is not pinned down; at
  Omniglot's shapes compiled and eager agreed to float32 rounding. Tests:
  tests/test_mamlpp.py and tests/test_vision.py. The mask costs some speed
  (docs/benchmarks.md).
  """
  h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
  x = x[..., :h, :w, :]
  x = x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, x.shape[-1]))
  x = jnp.moveaxis(x, -4, -3).reshape(x.shape[:-5] + (h // 2, w // 2, 4, x.shape[-1]))
  first_max = jax.nn.one_hot(jnp.argmax(x, axis=-2), 4, axis=-2, dtype=bool)
  return jnp.sum(jnp.where(first_max, x, jnp.zeros((), x.dtype)), axis=-2)


class Conv4(FewShotModel):
  """4 x [3x3 conv, batch norm (batch statistics), ReLU, 2x2 max-pool], then a head.

  With 64 channels on 28x28 Omniglot the features are 64-dimensional (28 -> 14
  -> 7 -> 3 -> 1); with 32 channels on 84x84 miniImageNet, 800-dimensional.

  Attributes:
    out: classes of the linear head (N).
    channels: filters per block.
    batch_norm: 'transductive' (each batch normalised with its own statistics,
      as in the MAML paper) or 'support' (a task's query inputs normalised with
      its support set's statistics: the learners pass the support set as
      context, `algorithms.common.support_statistics`) or 'tasknorm' (as
      'support', with `TaskNormI` layers).
    thin_input_channels_first: for inputs of at most 3 channels, run the first
      convolution and its batch norm channels-first and move the channels last
      before the ReLU's output is pooled (see `Conv3x3`). Same function,
      slightly faster on a CPU (docs/benchmarks.md). False gives the
      all-channels-last formulation, for comparison.
  """
  out: int = 5
  channels: Sequence[int] = (64, 64, 64, 64)
  thin_input_channels_first: bool = True
  batch_norm: str = 'transductive'

  def setup(self):
    self.convs = [Conv3x3(c) for c in self.channels]
    norm = norm_layer(self.batch_norm)
    self.norms = [norm() for _ in self.channels]
    self.head = nn.Dense(self.out)

  def embed(self, x: Array, mask: Optional[Array] = None) -> Array:
    for conv, norm in zip(self.convs, self.norms):
      if self.thin_input_channels_first and x.shape[-1] <= 3:
        x = jnp.moveaxis(jax.nn.relu(norm(conv(x, channels_first_out=True), channel_axis=0,
                                          mask=mask)), 0, -1)
      else:
        x = jax.nn.relu(norm(conv(x), mask=mask))
      x = max_pool_2x2(x)
    return x.reshape(x.shape[:-3] + (-1,))
