"""Relation Networks: a learned module scores each query against each class.

    r[q, c] = sigmoid(g([f(x_q), sum of f(x_i) over support examples i of class c]))

f is the model's embedding and g the relation module on the concatenated pair:
the paper's two convolution blocks of 64 channels, then a fully connected
layer of 8 units and one sigmoid output. The loss is the paper's: the squared error of the
relation scores against one-hot targets, summed over classes and averaged over
query examples. The logits are g's output before the sigmoid, so the argmax is
the paper's prediction. There is no inner loop: the meta-gradient is the
gradient of the query loss through the relation module and the embeddings.

The paper's convolution blocks act on the feature maps before the
embedding's last two poolings; metajax models give a flat embedding (a 1x1
map for Conv4 on 28x28 Omniglot), on which a 3x3 convolution block is a
fully connected layer, so here g is fully connected throughout.

References:
  Sung, Yang, Zhang, Xiang, Torr & Hospedales, "Learning to Compare: Relation
  Network for Few-Shot Learning", CVPR 2018.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax import settings as settings_lib
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, register
from metajax.learner import MetaLearner
from metajax.settings import setting
from metajax.types import Array, LossFn, Params, PRNGKey, Task


class RelationModule(nn.Module):
  """g: [..., 2d] pairs -> [...] relation logits.

  Two ReLU layers of `channels` units (the paper's two convolution blocks,
  as they act on a 1x1 feature map), a ReLU layer of `hidden` units, one unit.
  """
  channels: int
  hidden: int

  @nn.compact
  def __call__(self, pairs: Array) -> Array:
    h = pairs
    for i in range(2):
      h = nn.relu(nn.Dense(self.channels, name=f'block_{i}')(h))
    h = nn.relu(nn.Dense(self.hidden, name='hidden')(h))
    return nn.Dense(1, name='out')(h)[..., 0]


def relation_pairs(query_features: Array, class_features: Array) -> Array:
  """[Q, C, 2d]: each query's embedding beside each class's."""
  q, c = query_features.shape[0], class_features.shape[0]
  queries = jnp.broadcast_to(query_features[:, None], (q, c, query_features.shape[1]))
  classes = jnp.broadcast_to(class_features[None], (q, c, class_features.shape[1]))
  return jnp.concatenate([queries, classes], -1)


def relation_loss(logits: Array, labels: Array) -> Array:
  """The paper's loss: sum over classes of (sigmoid(logit) - one-hot)^2, mean over rows.

  Columns of classes absent from the support hold -1e9 (score 0, target 0):
  they add nothing.
  """
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return jnp.mean(jnp.sum((jax.nn.sigmoid(logits) - targets) ** 2, -1))


@dataclasses.dataclass(frozen=True)
class RelationSettings(settings_lib.Section):
  """Relation Networks' relation module."""
  relation_channels: int = setting(64, 'units of the relation module\'s first two layers '
                                   '(the paper\'s 64-channel convolution blocks)', minimum=1)
  relation_hidden: int = setting(8, 'units of its last hidden layer (8: the paper)',
                                 minimum=1)


def relation(model: nn.Module, loss_fn: LossFn = relation_loss, relation_channels: int = 64,
             relation_hidden: int = 8) -> MetaLearner:
  """Relation Networks on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: the loss of the relation logits (default, and what the registry
      builds: `relation_loss`, the paper's squared error).
    relation_channels: units of the relation module's first two layers.
    relation_hidden: units of its last hidden layer (theta['relation']).

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`) that classifies any
    number of ways: `adapt` sums the support embeddings per class,
    phi = {'classes': [S, d], 'counts': [S]}.
  """
  for name, value in (('relation_channels', relation_channels),
                      ('relation_hidden', relation_hidden)):
    if value < 1:
      settings_lib.fail(name, value, 'must be a positive integer')
  module = RelationModule(relation_channels, relation_hidden)

  def init(rng: PRNGKey, example_task: Task) -> Params:
    model_rng, relation_rng = jax.random.split(rng)
    theta = common.init_embedding(model, model_rng, example_task)
    features = model.apply(theta['model'], example_task.support.x, method='embed')
    theta['relation'] = module.init(relation_rng, relation_pairs(features[:1], features[:1]))
    return theta

  def fit(theta, features, labels, mask, rng):
    del theta, rng
    means, counts = common.class_means(features, labels, mask)
    return {'classes': means * counts[:, None], 'counts': counts}

  def logits(theta, phi, features):
    scores = module.apply(theta['relation'], relation_pairs(features, phi['classes']))
    return common.mask_absent(scores, phi['counts'])

  return common.embedding_learner('relation', model, loss_fn, fit, logits, init=init)


register(AlgorithmSpec(
    name='relation', summary='Relation Networks (Sung et al. 2018)',
    settings=RelationSettings, tasks=('classification',), any_ways=True,
    build=lambda s, model, loss_fn: relation(model, relation_loss, s.relation_channels,
                                             s.relation_hidden),
    # (The paper trains 5-way 1-shot with 19 queries per class.)
    dataset_defaults={'omniglot': common.EPISODIC_OMNIGLOT}))
