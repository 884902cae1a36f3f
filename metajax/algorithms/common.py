"""Helpers shared by the algorithms: adaptation by the inner loop, class means, heads."""

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import inner, losses
from metajax.learner import SOLVER_KEYS, Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task


def init_model(model: nn.Module, rng: PRNGKey, example_task: Task) -> Params:
  """Initialises `model` on one task's support inputs: `{'model': variables}`."""
  return {'model': model.init(rng, example_task.support.x)}


def run_model(model: nn.Module, variables: Params, x: Array, mask: Optional[Array] = None,
              method: Optional[str] = None) -> Array:
  """`model.apply(variables, x)` (or its `method`), passing `mask` when there is one.

  A model's `mask` is the rows whose activations make the batch statistics
  (`models.FewShotModel`); a model of one's own that takes no mask still runs
  every episode without padding or support statistics.
  """
  kwargs = {} if mask is None else {'mask': mask}
  return model.apply(variables, x, method=method, **kwargs)


def split_loss(model: nn.Module, loss_fn: LossFn, variables: Params, split: Split) -> Array:
  """`loss_fn` of the model's predictions on one side of a task (its real rows)."""
  return losses.masked_mean(loss_fn, run_model(model, variables, split.x, split.mask), split.y,
                            split.mask)


def with_head(variables: Params, head: Params) -> Params:
  """`variables` with the parameters of the submodule `head` replaced."""
  return {**variables, 'params': {**variables['params'], 'head': head}}


def zero_head(variables: Params) -> Params:
  """`variables` with the parameters of the submodule `head` set to zero (the zeroing trick)."""
  return with_head(variables, jax.tree.map(jnp.zeros_like, variables['params']['head']))


def concat_splits(a: Split, b: Split) -> Split:
  return Split(jnp.concatenate([a.x, b.x]), jnp.concatenate([a.y, b.y]))


def apply_model(model: nn.Module):
  """`apply(theta, phi, x, mask=None)` for learners whose phi is the model's variables."""

  def apply(theta: Params, phi: Params, x: Array, mask: Optional[Array] = None) -> Array:
    del theta
    return run_model(model, phi, x, mask)

  return apply


def uses_support_statistics(model: nn.Module) -> bool:
  """Whether `model` normalises query inputs with the support set's statistics (or TaskNorm's)."""
  return getattr(model, 'batch_norm', 'transductive') != 'transductive'


def with_support(model: nn.Module, phi: Params, support: Split) -> Params:
  """phi as `support_statistics`' apply takes it: with the support inputs, if they normalise."""
  if not uses_support_statistics(model):
    return phi
  return {'phi': phi, 'support': Split(support.x, None, support.mask)}


def support_statistics(model: nn.Module, adapt, apply=None):
  """`(adapt, apply)` that normalise query inputs with the support set's batch statistics.

  With `model.batch_norm` 'support' or 'tasknorm', `adapt` keeps the support set in phi
  (`{'phi': phi, 'support': support}`) and `apply` runs the model on the
  support inputs and `x` together, with only the real support rows making the
  batch-norm statistics, and returns the rows of `x`: no statistic is computed
  over query examples, so one query input changes no other's prediction. The
  learner's `apply` must treat rows independently but for those statistics
  (every metajax learner does). Otherwise (`'transductive'`, or a model
  without batch norm) both come back unchanged.
  """
  apply = apply_model(model) if apply is None else apply
  if not uses_support_statistics(model):
    return adapt, apply

  def adapt_keeping_support(theta, support: Split, rng, num_steps=None) -> Adapted:
    adapted = adapt(theta, support, rng, num_steps)
    return Adapted(with_support(model, adapted.params, support), adapted.support_losses)

  def apply_with_support(theta, phi, x, mask=None):
    del mask  # the query rows make no statistics, real or not
    support = phi['support']
    n = support.x.shape[0]
    rows = jnp.ones(n, bool) if support.mask is None else support.mask
    both = jnp.concatenate([support.x, x.astype(support.x.dtype)])
    stats = jnp.concatenate([rows, jnp.zeros(x.shape[0], bool)])
    return apply(theta, phi['phi'], both, stats)[n:]

  return adapt_keeping_support, apply_with_support


def full_adapt(model: nn.Module, loss_fn: LossFn, optimizer: optax.GradientTransformation,
               inner_steps: int, *, first_order: bool = False, remat: bool = False,
               backprop_steps: Optional[int] = None):
  """`adapt` that runs the inner loop on every model parameter."""

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    steps = inner_steps if num_steps is None else num_steps
    result = inner.inner_loop(
        lambda v: split_loss(model, loss_fn, v, support), theta['model'],
        optimizer, steps, first_order=first_order, remat=remat,
        backprop_steps=backprop_steps)
    return Adapted(result.params, result.losses)

  return adapt


def query_loss_learner(name: str, model: nn.Module, loss_fn: LossFn, adapt,
                       init=None, apply=None) -> MetaLearner:
  """A learner whose meta-gradient is the gradient of the query loss after `adapt`.

  Query inputs are normalised as `model.batch_norm` says (`support_statistics`).
  """
  adapt, apply = support_statistics(model, adapt, apply)

  def outer_loss(theta: Params, task: Task, rng: PRNGKey):
    adapted = adapt(theta, task.support, rng)
    loss = query_loss(loss_fn, apply, theta, adapted.params, task.query)
    return loss, {'query_loss': loss, 'support_loss_before': adapted.support_losses[0],
                  **solver_metrics(adapted.params)}

  return MetaLearner(name=name, init=init or functools.partial(init_model, model),
                     adapt=adapt, apply=apply, outer_loss=outer_loss)


# The Omniglot default of the learners with no inner loop that take any number
# of ways (matching, relation, r2d2, metaoptnet, incontext): one 20-way 1-shot
# episode a step with 5 queries per class, 2,000 steps (minutes on a 2-core
# CPU), tested on 5-way (or --ways) episodes with 15 queries per class.
EPISODIC_OMNIGLOT = {'train_ways': 20, 'query': 5, 'eval_query': 15, 'meta_batch_size': 1,
                     'num_steps': 2000, 'checkpoint_every': 100, 'log_every': 50}


def init_embedding(model: nn.Module, rng: PRNGKey, example_task: Task) -> Params:
  """`{'model': variables}` of `model.embed` (its head is not initialised)."""
  return {'model': model.init(rng, example_task.support.x, method='embed')}


def embedding_learner(name: str, model: nn.Module, loss_fn: LossFn, fit, logits,
                      init=None) -> MetaLearner:
  """A learner with no inner loop that classifies the embeddings `model.embed(x)`.

  ProtoNets, Matching Nets, Relation Nets, R2D2, MetaOptNet and the in-context
  learner differ only in what they read from the support set's embeddings and
  how they score a query's:

    fit(theta, features, labels, mask, rng) -> phi  # prototypes, a solved head, the support
    logits(theta, phi, features) -> [B, S]          # scores of classes 0..S-1

  `adapt` embeds the support set and fits phi (its loss is `loss_fn` of the
  support's own scores); `apply` scores query inputs. `init(rng, example_task)`
  makes theta (default: `init_embedding`). The learner takes any number of ways.
  """

  def embed(theta, x, mask=None):
    return run_model(model, theta['model'], x, mask, 'embed')

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del num_steps
    features = embed(theta, support.x, support.mask)
    phi = fit(theta, features, support.y, support.mask, rng)
    loss = losses.masked_mean(loss_fn, logits(theta, phi, features), support.y, support.mask)
    return Adapted(phi, loss[None])

  def apply(theta, phi, x, mask=None):
    return logits(theta, phi, embed(theta, x, mask))

  return query_loss_learner(name, model, loss_fn, adapt,
                            init=init or functools.partial(init_embedding, model),
                            apply=apply)._replace(adapts=False, any_ways=True)


def solver_metrics(phi: Params) -> dict[str, Array]:
  """`SOLVER_KEYS` from phi['solver'], where `adapt` solves a problem per task (else none)."""
  inner = phi.get('phi', phi) if isinstance(phi, dict) else phi  # under support statistics
  solver = inner.get('solver') if isinstance(inner, dict) else None
  return {} if solver is None else {k: solver[k.removeprefix('solver_')] for k in SOLVER_KEYS}


def query_loss(loss_fn: LossFn, apply, theta: Params, phi: Params, query: Split) -> Array:
  """`loss_fn` of `apply`'s predictions on the real rows of `query`."""
  return losses.masked_mean(loss_fn, apply(theta, phi, query.x, query.mask), query.y,
                            query.mask)


def class_means(features: Array, labels: Array,
                mask: Optional[Array] = None) -> tuple[Array, Array]:
  """([S, d] mean feature of classes 0..S-1, [S] counts), S = support size.

  Rows where `mask` is False (padding) count in no class.
  """
  one_hot = jax.nn.one_hot(labels, features.shape[0], dtype=features.dtype)
  if mask is not None:
    one_hot = one_hot * mask[:, None].astype(one_hot.dtype)
  counts = one_hot.sum(0)
  return one_hot.T @ features / jnp.maximum(counts, 1)[:, None], counts


def normalise(v: Array, axis: int = -1) -> Array:
  """`v` divided by its Euclidean norm along `axis` (1e-12 keeps 0 finite)."""
  return v * jax.lax.rsqrt(jnp.sum(v * v, axis, keepdims=True) + 1e-12)


def cosine_logits(features: Array, weights: Array, scale) -> Array:
  """[B, C] `scale` times the cosine of `features` [B, d] and weight columns [d, C]."""
  return scale * normalise(features, -1) @ normalise(weights, 0)


HEADS = ('linear', 'dot', 'cosine', 'euclidean')


def head_logits(kind: str, features: Array, kernel: Array, bias: Optional[Array] = None,
                scale=1.0) -> Array:
  """[B, C] scores of `features` [B, d] by a head of weight columns `kernel` [d, C].

  'linear': `features @ kernel + bias` (Baseline); 'dot': `features @ kernel`;
  'cosine': `scale` times the cosine of features and columns (Baseline++, the
  cosine predictor); 'euclidean': minus the squared distance to each column.
  """
  if kind == 'linear':
    return features @ kernel + bias
  if kind == 'dot':
    return features @ kernel
  if kind == 'cosine':
    return cosine_logits(features, kernel, scale)
  if kind == 'euclidean':
    return squared_distance_logits(features, kernel.T)
  raise ValueError(f'head={kind!r}: choose one of {", ".join(HEADS)}')


def squared_distance_logits(features: Array, centres: Array) -> Array:
  """[B, C] minus the squared Euclidean distances of `features` [B, d] to `centres` [C, d]."""
  return -(jnp.sum(features ** 2, -1, keepdims=True) - 2 * features @ centres.T
           + jnp.sum(centres ** 2, -1))


def mask_absent(logits: Array, counts: Array) -> Array:
  """Logits of classes with no support example set to -1e9 (ignored by softmax, argmax)."""
  return jnp.where(counts > 0, logits, -1e9)
