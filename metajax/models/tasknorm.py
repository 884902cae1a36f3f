"""TaskNorm-I: support-set batch statistics blended with each example's instance statistics.

A normalisation layer for meta-learning (Bronskill et al. 2020). A task's
context (its support set) gives batch moments over its real rows, as
`BatchStatNorm` with a mask; every example also has its own instance moments
(over its spatial positions, per channel). Each row is normalised with the
blend

    mu    = alpha * mu_BN + (1 - alpha) * mu_IN
    sigma2 = alpha * (sigma2_BN + (mu_BN - mu)^2) + (1 - alpha) * (sigma2_IN + (mu_IN - mu)^2)

(the moments of the mixture of the two distributions), with
`alpha = sigmoid(scale * n + offset)`, n the number of context rows and
`scale`, `offset` learned per layer (initialised to 0, so alpha starts at
1/2, as in the authors' code). Small support sets can so lean on the instance
moments and large ones on the batch moments.

Leak-free by construction: a query row is normalised with the context's batch
moments and its own instance moments, so it sees no other query. The models
pass the support set as the context (`batch_norm='tasknorm'`, which the
learners treat as `'support'`: `algorithms.common.support_statistics`); a
support row gets the same normalisation in the support-set pass of the inner
loop and in the joint pass that predicts the queries.

Variances are biased (the mean of squares minus the square of the mean, as in
`BatchStatNorm`); the authors' code divides by n - 1.

Reference:
  Bronskill, Gordon, Requeima, Nowozin & Turner, "TaskNorm: Rethinking Batch
  Normalization for Meta-Learning", ICML 2020.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.types import Array


def _moments(x: Array, axes: tuple[int, ...], weights: Optional[Array] = None,
             count=None) -> tuple[Array, Array]:
  """Mean and biased variance of `x` over `axes` (weighted sums / count when weights are given)."""
  if weights is None:
    mean, mean_square = jnp.mean(x, axes, keepdims=True), jnp.mean(jnp.square(x), axes,
                                                                    keepdims=True)
  else:
    mean = jnp.sum(x * weights, axes, keepdims=True) / count
    mean_square = jnp.sum(jnp.square(x) * weights, axes, keepdims=True) / count
  return mean, jnp.maximum(mean_square - jnp.square(mean), 0.0)


class TaskNormI(nn.Module):
  """TaskNorm-I over activations `[..., H, W, C]` (or `[C, ..., H, W]` with `channel_axis=0`).

  Called as `BatchStatNorm`: `mask` (bool over the batch axes) picks the
  context rows, whose activations make the batch moments and whose number
  sets alpha; None: every row. Learnable per-channel scale and bias, and the
  blend's `alpha_scale` and `alpha_offset` (scalars).
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array, channel_axis: int = -1, mask: Optional[Array] = None) -> Array:
    channel_axis %= x.ndim
    if channel_axis not in (0, x.ndim - 1):
      raise ValueError(f'channel_axis={channel_axis}: TaskNormI takes channels first or last')
    if x.ndim < 4:
      raise ValueError(f'TaskNormI normalises images [..., H, W, C]; got shape {x.shape}')
    channels = x.shape[channel_axis]
    spatial = (x.ndim - 2, x.ndim - 1) if channel_axis == 0 else (x.ndim - 3, x.ndim - 2)
    batch_axes = tuple(a for a in range(x.ndim) if a != channel_axis and a not in spatial)
    all_axes = batch_axes + spatial
    if mask is None:
      context = jnp.asarray(x.size // (channels * x.shape[spatial[0]] * x.shape[spatial[1]]),
                            x.dtype)
      batch_mean, batch_var = _moments(x, all_axes)
    else:
      shape = [1] * x.ndim
      for axis, size in zip(batch_axes, mask.shape):
        shape[axis] = size
      weights = mask.reshape(shape).astype(x.dtype)
      context = jnp.sum(mask).astype(x.dtype)
      count = context * x.shape[spatial[0]] * x.shape[spatial[1]]
      batch_mean, batch_var = _moments(x, all_axes, weights, count)
    instance_mean, instance_var = _moments(x, spatial)
    alpha_scale = self.param('alpha_scale', nn.initializers.zeros, (), x.dtype)
    alpha_offset = self.param('alpha_offset', nn.initializers.zeros, (), x.dtype)
    alpha = jax.nn.sigmoid(alpha_scale * context + alpha_offset)
    mean = alpha * batch_mean + (1 - alpha) * instance_mean
    var = (alpha * (batch_var + jnp.square(batch_mean - mean))
           + (1 - alpha) * (instance_var + jnp.square(instance_mean - mean)))
    scale = self.param('scale', nn.initializers.ones, (channels,), x.dtype)
    bias = self.param('bias', nn.initializers.zeros, (channels,), x.dtype)
    shape = [1] * x.ndim
    shape[channel_axis] = channels
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.reshape(shape) + bias.reshape(shape)
