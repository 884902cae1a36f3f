"""Prototypical Networks: classify by distance to class means of embeddings.

logits[q, c] = -||f(x_q) - p_c||^2 with p_c the mean embedding of the support
examples of class c. There is no inner loop; the meta-gradient is the gradient
of the query cross-entropy through the embeddings and the prototypes.

References:
  Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
  NeurIPS 2017.
"""

import flax.linen as nn

from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, register
from metajax.learner import MetaLearner
from metajax.types import Array, LossFn


def prototype_logits(support_features: Array, support_labels: Array,
                     query_features: Array) -> Array:
  """Negative squared Euclidean distances to the class prototypes.

  Classes are the integers 0..S-1 with S the support size (a static bound on
  the number of classes); columns of classes absent from the support get a
  logit of -1e9, so the softmax and argmax ignore them. Columns 0..N-1 are the
  logits of an N-way task.
  """
  prototypes, counts = common.class_means(support_features, support_labels)
  return common.mask_absent(common.squared_distance_logits(query_features, prototypes), counts)


def protonet(model: nn.Module, loss_fn: LossFn) -> MetaLearner:
  """Prototypical Networks on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: `(logits, labels) -> scalar`, softmax cross-entropy.

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`): `adapt` computes the
    prototypes, phi = {'prototypes': [S, d], 'counts': [S]}.
  """

  def fit(theta, features, labels, mask, rng):
    del theta, rng
    means, counts = common.class_means(features, labels, mask)
    return {'prototypes': means, 'counts': counts}

  def logits(theta, phi, features):
    del theta
    return common.mask_absent(common.squared_distance_logits(features, phi['prototypes']),
                              phi['counts'])

  return common.embedding_learner('protonet', model, loss_fn, fit, logits)


register(AlgorithmSpec(
    name='protonet', summary='Prototypical Networks (Snell et al. 2017)',
    build=lambda s, model, loss_fn: protonet(model, loss_fn),
    tasks=('classification',), any_ways=True,
    # The paper trains Omniglot 1-shot on 60-way episodes; one episode a step,
    # 5 queries per class, 2,000 steps on a 2-core CPU.
    dataset_defaults={'omniglot': {'train_ways': 60, 'query': 5, 'eval_query': 15,
                                   'meta_batch_size': 1, 'num_steps': 2000,
                                   'checkpoint_every': 100, 'log_every': 50}}))
