"""Matching Networks: attention over the support set by cosine similarity.

    p(y = c | x, S) = sum over support examples i of class c of a(x, x_i),
    a(x, x_i) = softmax_i(scale * cos(f(x, S), g(x_i, S))).

Without full context embeddings f and g are the model's embedding. With them
(`matching_fce`, the paper's section 2.1.2) g embeds each support example in
the context of the whole support set, a bidirectional LSTM over the support
embeddings plus a skip connection; f reads the support set from each query's
embedding with an attention LSTM of `matching_fce_steps` steps. The logits are
log p, so the run's softmax cross-entropy is the paper's loss -log p(y | x, S).
There is no inner loop: the meta-gradient is the gradient of the query loss
through the embeddings and the attention.

References:
  Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks for
  One Shot Learning", NeurIPS 2016.
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


def matching_logits(query_features: Array, support_features: Array, support_labels: Array,
                    scale: float = 1.0, support_mask: Optional[Array] = None) -> Array:
  """log p(c | x): the log of the attention that each class's support examples receive.

  Classes are 0..S-1 (S the support size); classes absent from the support
  (and padded support rows) get a logit of -1e9.
  """
  similarity = scale * (common.normalise(query_features) @ common.normalise(support_features).T)
  one_hot = jax.nn.one_hot(support_labels, support_features.shape[0], dtype=bool)
  if support_mask is not None:
    one_hot = one_hot & support_mask[:, None]
    similarity = jnp.where(support_mask[None, :], similarity, -jnp.inf)
  attention = jax.nn.log_softmax(similarity, axis=-1)  # [Q, S]
  per_class = jnp.where(one_hot[None], attention[:, :, None], -jnp.inf)  # [Q, S, C]
  logits = jax.nn.logsumexp(per_class, axis=1)
  return jnp.where(one_hot.any(0)[None], logits, -1e9)


class FullContext(nn.Module):
  """The paper's g (a bidirectional LSTM over the support) and f (an attention LSTM)."""
  steps: int

  @nn.compact
  def __call__(self, support: Array, query: Array, lengths: Optional[Array] = None):
    dim = support.shape[-1]
    rnn = lambda name, reverse=False: nn.RNN(nn.OptimizedLSTMCell(dim), reverse=reverse,
                                             keep_order=True, name=name)
    zeros = jnp.zeros((1, dim), support.dtype)  # the carry in the features' dtype
    run = lambda name, reverse=False: rnn(name, reverse)(
        support[None], initial_carry=(zeros, zeros), seq_lengths=lengths)[0]
    g = support + run('forward') + run('backward', True)
    valid = (jnp.arange(g.shape[0]) < lengths[0]) if lengths is not None else None
    cell = nn.OptimizedLSTMCell(dim, name='attention')
    # K steps of reading the support set: (c, h_hat) = LSTM(f'(x), (c, h + r)),
    # h = h_hat + f'(x), r = softmax(h g^T) g.
    c = h = read = jnp.zeros_like(query)
    for _ in range(self.steps):
      (c, h_hat), _ = cell((c, h + read), query)
      h = h_hat + query
      scores = h @ g.T
      if valid is not None:
        scores = jnp.where(valid[None], scores, -jnp.inf)
      read = jax.nn.softmax(scores, axis=-1) @ g
    return g, h


@dataclasses.dataclass(frozen=True)
class MatchingSettings(settings_lib.Section):
  """Matching Networks' attention."""
  matching_fce: bool = setting(False, 'full context embeddings: a bidirectional LSTM over the '
                               'support set and an attention LSTM for the queries')
  matching_fce_steps: int = setting(5, 'steps of the attention LSTM of --matching_fce',
                                    minimum=1)
  matching_scale: float = setting(1.0, 'multiplies the cosine similarities before the softmax '
                                  '(1: the paper)', above=0)


def matching(model: nn.Module, loss_fn: LossFn, matching_fce: bool = False,
             matching_fce_steps: int = 5, matching_scale: float = 1.0) -> MetaLearner:
  """Matching Networks on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: `(logits, labels) -> scalar`, softmax cross-entropy.
    matching_fce: full context embeddings (parameters under theta['fce']).
    matching_fce_steps: steps of the attention LSTM.
    matching_scale: the factor on the cosine similarities.

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`) that classifies any
    number of ways: `adapt` keeps the support embeddings, phi = {'features',
    'labels', 'mask'}.
  """
  context = FullContext(matching_fce_steps) if matching_fce else None

  def init(rng: PRNGKey, example_task: Task) -> Params:
    model_rng, fce_rng = jax.random.split(rng)
    theta = common.init_embedding(model, model_rng, example_task)
    if context is not None:
      features = model.apply(theta['model'], example_task.support.x, method='embed')
      theta['fce'] = context.init(fce_rng, features, features)
    return theta

  def fit(theta, features, labels, mask, rng):
    del theta, rng
    return {'features': features, 'labels': labels, 'mask': mask}

  def logits(theta, phi, query_features):
    support, mask = phi['features'], phi['mask']
    if context is not None:
      lengths = None if mask is None else mask.sum()[None]
      support, query_features = context.apply(theta['fce'], support, query_features, lengths)
    return matching_logits(query_features, support, phi['labels'], matching_scale, mask)

  return common.embedding_learner('matching', model, loss_fn, fit, logits, init=init)


register(AlgorithmSpec(
    name='matching', summary='Matching Networks (Vinyals et al. 2016)',
    settings=MatchingSettings, tasks=('classification',), any_ways=True,
    build=lambda s, model, loss_fn: matching(model, loss_fn, s.matching_fce,
                                             s.matching_fce_steps, s.matching_scale),
    dataset_defaults={'omniglot': common.EPISODIC_OMNIGLOT}))
