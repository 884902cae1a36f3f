"""Helpers shared by the algorithms: adaptation by the inner loop, class means, heads."""

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import inner
from metajax.learner import Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task


def init_model(model: nn.Module, rng: PRNGKey, example_task: Task) -> Params:
  """Initialises `model` on one task's support inputs: `{'model': variables}`."""
  return {'model': model.init(rng, example_task.support.x)}


def split_loss(model: nn.Module, loss_fn: LossFn, variables: Params, split: Split) -> Array:
  """`loss_fn` of the model's predictions on one side of a task."""
  return loss_fn(model.apply(variables, split.x), split.y)


def with_head(variables: Params, head: Params) -> Params:
  """`variables` with the parameters of the submodule `head` replaced."""
  return {**variables, 'params': {**variables['params'], 'head': head}}


def concat_splits(a: Split, b: Split) -> Split:
  return Split(jnp.concatenate([a.x, b.x]), jnp.concatenate([a.y, b.y]))


def apply_model(model: nn.Module):
  """`apply(theta, phi, x)` for learners whose phi is the model's variables."""

  def apply(theta: Params, phi: Params, x: Array) -> Array:
    del theta
    return model.apply(phi, x)

  return apply


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
  """A learner whose meta-gradient is the gradient of the query loss after `adapt`."""
  apply = apply or apply_model(model)

  def outer_loss(theta: Params, task: Task, rng: PRNGKey):
    adapted = adapt(theta, task.support, rng)
    loss = loss_fn(apply(theta, adapted.params, task.query.x), task.query.y)
    return loss, {'query_loss': loss, 'support_loss_before': adapted.support_losses[0]}

  return MetaLearner(name=name, init=init or functools.partial(init_model, model),
                     adapt=adapt, apply=apply, outer_loss=outer_loss)


def class_means(features: Array, labels: Array) -> tuple[Array, Array]:
  """([S, d] mean feature of classes 0..S-1, [S] counts), S = support size."""
  one_hot = jax.nn.one_hot(labels, features.shape[0], dtype=features.dtype)
  counts = one_hot.sum(0)
  return one_hot.T @ features / jnp.maximum(counts, 1)[:, None], counts


def normalise(v: Array, axis: int = -1) -> Array:
  """`v` divided by its Euclidean norm along `axis` (1e-12 keeps 0 finite)."""
  return v * jax.lax.rsqrt(jnp.sum(v * v, axis, keepdims=True) + 1e-12)


def cosine_logits(features: Array, weights: Array, scale) -> Array:
  """[B, C] `scale` times the cosine of `features` [B, d] and weight columns [d, C]."""
  return scale * normalise(features, -1) @ normalise(weights, 0)


def squared_distance_logits(features: Array, centres: Array) -> Array:
  """[B, C] minus the squared Euclidean distances of `features` [B, d] to `centres` [C, d]."""
  return -(jnp.sum(features ** 2, -1, keepdims=True) - 2 * features @ centres.T
           + jnp.sum(centres ** 2, -1))


def mask_absent(logits: Array, counts: Array) -> Array:
  """Logits of classes with no support example set to -1e9 (ignored by softmax, argmax)."""
  return jnp.where(counts > 0, logits, -1e9)
