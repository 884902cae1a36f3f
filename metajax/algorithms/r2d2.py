"""R2D2: a ridge-regression head solved in closed form on the support set.

For support features X [n, d] and one-hot labels Y [n, C], the head is the
ridge solution W = argmin ||X W - Y||^2 + lambda ||W||^2, computed in the dual
(Woodbury) form W = X^T (X X^T + lambda I)^{-1} Y, so the linear solve is the
size of the support set, not of the features. Query logits are
alpha * (X_q W) + beta with a learned scale alpha and bias beta (the paper's
"adjust" layer), and lambda is learned too (in log space). Everything,
the solve included, is differentiated end to end: the meta-gradient reaches the
embedding through W.

References:
  Bertinetto, Henriques, Torr & Vedaldi, "Meta-learning with differentiable
  closed-form solvers", ICLR 2019.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax import settings as settings_lib
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, register
from metajax.learner import MetaLearner
from metajax.settings import setting
from metajax.types import Array, LossFn, Params, PRNGKey, Task


def ridge_head(features: Array, labels: Array, lam, mask: Optional[Array] = None) -> Array:
  """W [d, S] = X^T (X X^T + lam I)^{-1} Y: the ridge solution in its dual form.

  Classes are 0..S-1 (S the support size); padded rows (`mask` False) have
  zero features and targets, so they change nothing.
  """
  n = features.shape[0]
  targets = jax.nn.one_hot(labels, n, dtype=features.dtype)
  if mask is not None:
    keep = mask[:, None].astype(features.dtype)
    features, targets = features * keep, targets * keep
  gram = features @ features.T + lam * jnp.eye(n, dtype=features.dtype)
  return features.T @ jnp.linalg.solve(gram, targets)


@dataclasses.dataclass(frozen=True)
class R2D2Settings(settings_lib.Section):
  """R2D2's ridge head."""
  r2d2_lambda: float = setting(1.0, 'initial ridge regularisation lambda (learned)', above=0)
  r2d2_scale: float = setting(1.0, 'initial scale alpha of the head\'s logits (learned)',
                              above=0)


def r2d2(model: nn.Module, loss_fn: LossFn, r2d2_lambda: float = 1.0,
         r2d2_scale: float = 1.0) -> MetaLearner:
  """R2D2 on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: `(logits, labels) -> scalar`, softmax cross-entropy.
    r2d2_lambda: the initial ridge lambda (its log is the learned parameter
      `log_lambda` of `theta`'s `ridge` entry).
    r2d2_scale: the initial scale of the logits (learned as `log_scale`); the
      bias starts at 0.

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`) that classifies any
    number of ways: `adapt` solves the head, phi = {'head': [d, S], 'counts': [S]}.
  """
  for name, value in (('r2d2_lambda', r2d2_lambda), ('r2d2_scale', r2d2_scale)):
    if not value > 0:
      settings_lib.fail(name, value, 'must be > 0')

  def init(rng: PRNGKey, example_task: Task) -> Params:
    return {**common.init_embedding(model, rng, example_task),
            'ridge': {'log_lambda': jnp.log(jnp.float32(r2d2_lambda)),
                      'log_scale': jnp.log(jnp.float32(r2d2_scale)),
                      'bias': jnp.zeros((), jnp.float32)}}

  def fit(theta, features, labels, mask, rng):
    del rng
    lam = jnp.exp(theta['ridge']['log_lambda']).astype(features.dtype)
    counts = jax.nn.one_hot(labels, features.shape[0], dtype=features.dtype)
    if mask is not None:
      counts = counts * mask[:, None].astype(features.dtype)
    return {'head': ridge_head(features, labels, lam, mask), 'counts': counts.sum(0)}

  def logits(theta, phi, features):
    ridge = theta['ridge']
    out = jnp.exp(ridge['log_scale']) * (features @ phi['head']) + ridge['bias']
    return common.mask_absent(out.astype(features.dtype), phi['counts'])

  return common.embedding_learner('r2d2', model, loss_fn, fit, logits, init=init)


register(AlgorithmSpec(
    name='r2d2', summary='R2D2: a closed-form ridge-regression head (Bertinetto et al. 2019)',
    settings=R2D2Settings, tasks=('classification',), any_ways=True,
    build=lambda s, model, loss_fn: r2d2(model, loss_fn, s.r2d2_lambda, s.r2d2_scale),
    dataset_defaults={'omniglot': common.EPISODIC_OMNIGLOT}))
