"""Mixed precision: the model and inner loop in bfloat16, meta-parameters in float32.

`with_compute_dtype(learner, jnp.bfloat16)` wraps a learner so that every call
casts the meta-parameters and the task's floating-point arrays to the compute
dtype on the way in and its outputs back to float32 on the way out. The
meta-parameters and the meta-optimizer's state stay float32; `jax.grad`
through the cast gives float32 meta-gradients.
"""

import jax
import jax.numpy as jnp

from metajax.learner import MetaLearner

def _cast(tree, dtype):
  return jax.tree.map(
      lambda v: v.astype(dtype) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else v,
      tree)


def with_compute_dtype(learner: MetaLearner, dtype) -> MetaLearner:
  """`learner` computing in `dtype` (float32: unchanged)."""
  if jnp.dtype(dtype) == jnp.float32:
    return learner
  down = lambda tree: _cast(tree, dtype)
  up = lambda tree: _cast(tree, jnp.float32)

  def wrap(fn, n_cast):
    if fn is None:
      return None

    def wrapped(*args, **kwargs):
      args = tuple(down(a) if i < n_cast else a for i, a in enumerate(args))
      return up(fn(*args, **kwargs))

    return wrapped

  return learner._replace(
      adapt=wrap(learner.adapt, 2),
      apply=wrap(learner.apply, 3),
      outer_loss=wrap(learner.outer_loss, 2),
      meta_gradient=wrap(learner.meta_gradient, 2),
      batch_loss=wrap(learner.batch_loss, 2))
