"""Transductive fine-tuning (Dhillon et al. 2020): a pre-trained backbone tuned on each episode.

Pre-training is Baseline's (`finetune`): cross-entropy of a C-way linear head
on mini-batches of every meta-training class. For each test episode:

1. Support-based initialisation: a cosine head whose column for class k is
   the mean of the normalised support features of class k (so before any step
   the learner is a cosine prototype classifier), logits `scale * cos`.
2. Fine-tuning of the backbone and the head together by `inner_steps` steps of
   `inner_optimizer` (the paper: 25 steps of Adam at 5e-5, one batch of the
   whole support and query set each) on

       mean over support of cross-entropy + entropy_weight * mean over query of H(p(. | x))

   The query set's labels are never read, but every query input shapes the
   fine-tuned network: the predictions are transductive (`MetaLearner.transductive`).

The fine-tuning needs the query inputs, which `adapt` does not see, so it runs
in `apply`: `adapt` embeds the support set and initialises the head, `apply`
tunes on the support set and the inputs it is asked to predict. The number of
steps travels from `adapt` (whose `num_steps` evaluation sweeps) to `apply` as
the length of an empty array `phi['steps']` [steps, 0]: a shape, so it stays
static under `jit` and `vmap`.

Batch statistics follow the model's `batch_norm`: 'transductive' normalises
the support and query sets each with its own, 'support' and 'tasknorm'
normalise the queries with the support set's.

Reference:
  Dhillon, Chaudhari, Ravichandran & Soatto, "A Baseline for Few-Shot Image
  Classification", ICLR 2020.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import losses
from metajax.algorithms import common
from metajax.algorithms.finetune import COSINE_SCALE, OMNIGLOT_PRETRAINING, finetune
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register
from metajax.learner import Adapted, MetaLearner
from metajax.settings import setting
from metajax.types import Array, LossFn, Params, Split


def entropy(logits: Array) -> Array:
  """[B] entropy of softmax(logits) in nats (columns at -1e9 contribute nothing)."""
  log_p = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(log_p) * log_p, -1)


def transductive(model: nn.Module, loss_fn: LossFn, *, pretrain_classes: int,
                 inner_optimizer: optax.GradientTransformation = optax.adam(5e-5),
                 inner_steps: int = 25, entropy_weight: float = 1.0) -> MetaLearner:
  """Transductive fine-tuning from a Baseline-pre-trained backbone.

  Args:
    model: a metajax model; its `embed` is the backbone.
    loss_fn: softmax cross-entropy `(logits, labels) -> scalar`.
    pretrain_classes: classes of the pre-training split (C).
    inner_optimizer, inner_steps: the fine-tuning of backbone and head on
      each episode.
    entropy_weight: weight of the query entropy (0: fine-tuning on the
      support set alone, not transductive but for batch statistics).

  Returns:
    A `MetaLearner` with Baseline's `init` and `batch_loss` (theta =
    {'model', 'classifier'}); phi = {'model', 'head', 'present', 'support',
    'steps'}.
  """
  if entropy_weight < 0:
    raise ValueError(f'entropy_weight={entropy_weight}: must be >= 0')
  base = finetune(model, loss_fn, pretrain_classes=pretrain_classes)
  support_stats = common.uses_support_statistics(model)

  def embed(variables, support: Split, x: Optional[Array] = None, mask=None):
    """Features of the support set and of `x` (None: support only)."""
    if x is None:
      return common.run_model(model, variables, support.x, support.mask, 'embed'), None
    if not support_stats:
      return (common.run_model(model, variables, support.x, support.mask, 'embed'),
              common.run_model(model, variables, x, mask, 'embed'))
    n = support.x.shape[0]
    rows = jnp.ones(n, bool) if support.mask is None else support.mask
    both = common.run_model(model, variables, jnp.concatenate([support.x, x.astype(support.x.dtype)]),
                            jnp.concatenate([rows, jnp.zeros(x.shape[0], bool)]), 'embed')
    return both[:n], both[n:]

  def logits(head, present, features):
    return jnp.where(present, common.cosine_logits(features, head, COSINE_SCALE), -1e9)

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    steps = inner_steps if num_steps is None else num_steps
    features, _ = embed(theta['model'], support)
    means, counts = common.class_means(common.normalise(features, -1), support.y, support.mask)
    head, present = means.T, counts > 0  # [d, S]: one column per possible class
    loss = losses.masked_mean(loss_fn, logits(head, present, features), support.y, support.mask)
    phi = {'model': theta['model'], 'head': head, 'present': present, 'support': support,
           'steps': jnp.zeros((steps, 0), features.dtype)}
    return Adapted(phi, loss[None])

  def apply(theta, phi, x, mask=None):
    del theta
    support, present = phi['support'], phi['present']

    def objective(params):
      f_support, f_query = embed(params['model'], support, x, mask)
      fit = losses.masked_mean(loss_fn, logits(params['head'], present, f_support),
                               support.y, support.mask)
      h = entropy(logits(params['head'], present, f_query))
      rows = jnp.ones(h.shape, h.dtype) if mask is None else mask.astype(h.dtype)
      return fit + entropy_weight * jnp.sum(h * rows) / jnp.maximum(jnp.sum(rows), 1)

    def step(_, carry):
      params, state = carry
      updates, state = inner_optimizer.update(jax.grad(objective)(params), state, params)
      return optax.apply_updates(params, updates), state

    params = {'model': phi['model'], 'head': phi['head']}
    params, _ = jax.lax.fori_loop(0, phi['steps'].shape[0], step,
                                  (params, inner_optimizer.init(params)))
    return logits(params['head'], present, embed(params['model'], support, x, mask)[1])

  return base._replace(name='transductive', adapt=adapt, apply=apply, transductive=True)


@dataclasses.dataclass(frozen=True)
class TransductiveSettings(InnerLoop):
  """Each episode: 25 steps of Adam at 5e-5 on support and query together (Dhillon et al.)."""
  inner_steps: int = setting(25, 'fine-tuning steps on each test episode (backbone and head)',
                             minimum=1)
  inner_lr: float = setting(5e-5, 'learning rate of the fine-tuning', above=0)
  inner_optimizer: str = setting('adam', 'optimizer of the fine-tuning',
                                 choices=InnerLoop.__dataclass_fields__['inner_optimizer']
                                 .metadata['choices'])
  entropy_weight: float = setting(1.0, 'weight of the mean entropy of the query predictions in '
                                  'the fine-tuning loss (0: support cross-entropy alone)',
                                  minimum=0)
  pretrain_classes: Optional[int] = setting(None, 'classes of the pre-training head (default: '
                                            'every class of the training split, from the data)',
                                            minimum=2)


register(AlgorithmSpec(
    name='transductive',
    summary='transductive fine-tuning of a Baseline backbone (Dhillon et al. 2020)',
    settings=TransductiveSettings,
    # 0 steps: the support-based initialisation alone (a cosine prototype classifier).
    defaults={'eval_inner_steps': (0, 25)},
    from_data={'pretrain_classes': 'num_train_classes'},
    tasks=('classification',), any_ways=True,
    build=lambda s, model, loss_fn: transductive(
        model, loss_fn, pretrain_classes=s.pretrain_classes,
        inner_optimizer=s.inner_optimizer_at(), inner_steps=s.inner_steps,
        entropy_weight=s.entropy_weight),
    dataset_defaults={'omniglot': OMNIGLOT_PRETRAINING}))
