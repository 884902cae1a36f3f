"""Prototypical Networks: classify by distance to class means of embeddings.

logits[q, c] = -||f(x_q) - p_c||^2 with p_c the mean embedding of the support
examples of class c. There is no inner loop; the meta-gradient is the gradient
of the query cross-entropy through the embeddings and the prototypes.

References:
  Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
  NeurIPS 2017.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.learner import MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task


def class_means(features: Array, labels: Array) -> tuple[Array, Array]:
  """([S, d] mean feature of classes 0..S-1, [S] counts), S = support size."""
  one_hot = jax.nn.one_hot(labels, features.shape[0], dtype=features.dtype)
  counts = one_hot.sum(0)
  return one_hot.T @ features / jnp.maximum(counts, 1)[:, None], counts


def prototype_logits(support_features: Array, support_labels: Array,
                     query_features: Array) -> Array:
  """Negative squared Euclidean distances to the class prototypes.

  Classes are the integers 0..S-1 with S the support size (a static bound on
  the number of classes); columns of classes absent from the support get a
  logit of -1e9, so the softmax and argmax ignore them. Columns 0..N-1 are the
  logits of an N-way task.
  """
  prototypes, counts = class_means(support_features, support_labels)
  sq = (jnp.sum(query_features ** 2, -1, keepdims=True)
        - 2 * query_features @ prototypes.T + jnp.sum(prototypes ** 2, -1))
  return jnp.where(counts > 0, -sq, -1e9)


def protonet(model: nn.Module, loss_fn: LossFn, **unused) -> MetaLearner:
  """Prototypical Networks on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: `(logits, labels) -> scalar`, softmax cross-entropy.
    **unused: inner-loop settings, which a ProtoNet does not have.

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`).
  """
  del unused

  def init(rng: PRNGKey, example_task: Task) -> Params:
    return {'model': model.init(rng, example_task.support.x, method='embed')}

  def logits(theta, support: Split, query_x):
    embed = lambda x: model.apply(theta['model'], x, method='embed')
    return prototype_logits(embed(support.x), support.y, embed(query_x))

  def adapt(theta, support, rng, num_steps=None):
    del support, rng, num_steps
    return theta['model']

  def predict(theta, support, query_x, rng, num_steps=None):
    del rng, num_steps
    return logits(theta, support, query_x)

  def outer_loss(theta, task: Task, rng):
    del rng
    loss = loss_fn(logits(theta, task.support, task.query.x), task.query.y)
    return loss, {'query_loss': loss}

  return MetaLearner(name='protonet', init=init, adapt=adapt, predict=predict,
                     outer_loss=outer_loss, adapts=False, any_ways=True)
