"""`MetaLearner`: the record of pure functions that every algorithm returns.

An algorithm is a factory, e.g. `maml(model, loss_fn, inner_lr=0.01)`, that
returns a `MetaLearner`. Everything else (batching over tasks, compiling,
checkpointing, evaluation) is written once in `metajax.train` and
`metajax.evaluate` and works on any learner.

Meta-parameters `theta` are always a dict with the model's flax variables under
`'model'`, plus whatever else the algorithm meta-learns (Meta-SGD's per-parameter
learning rates under `'inner_lr'`).
"""

from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.types import Array, LossFn, Metrics, Params, PRNGKey, Split, Task


class MetaLearner(NamedTuple):
  """Pure functions that define a meta-learning algorithm.

  Attributes:
    name: the algorithm's flag name.
    init: `(rng, example_task) -> theta`.
    adapt: `(theta, support, rng, num_steps=None) -> phi`, the model variables
      adapted to the support set (`num_steps` overrides the training value and
      must be static).
    predict: `(theta, support, query_x, rng, num_steps=None) -> predictions`.
    outer_loss: `(theta, task, rng) -> (loss, aux)`; its `jax.grad` is the
      meta-gradient. None when the update is not a gradient (Reptile).
    meta_gradient: `(theta, task, rng) -> (update_direction, aux)` for
      algorithms whose update is not the gradient of `outer_loss`.
    adapts: whether `num_steps` means anything (an inner loop to step).
    any_ways: whether one learner classifies N-way tasks for any N (its
      classes come from the support set, not from a fixed-size head).
  """
  name: str
  init: Callable[[PRNGKey, Task], Params]
  adapt: Callable[..., Params]
  predict: Callable[..., Array]
  outer_loss: Optional[Callable[[Params, Task, PRNGKey], tuple[Array, Metrics]]] = None
  meta_gradient: Optional[Callable[[Params, Task, PRNGKey], tuple[Params, Metrics]]] = None
  adapts: bool = True  # False for learners with no inner loop to step through
  any_ways: bool = False  # True where the head is sized by the support set (any N)


def task_meta_gradient(learner: MetaLearner, theta: Params, task: Task,
                       rng: PRNGKey) -> tuple[Params, Metrics]:
  """The meta-gradient (or update direction) and metrics of one task."""
  if learner.meta_gradient is not None:
    return learner.meta_gradient(theta, task, rng)
  grads, aux = jax.grad(learner.outer_loss, has_aux=True)(theta, task, rng)
  return grads, aux


def init_model(model: nn.Module, rng: PRNGKey, example_task: Task) -> Params:
  """Initialises `model` on one task's support inputs: `{'model': variables}`."""
  return {'model': model.init(rng, example_task.support.x)}


def split_loss(model: nn.Module, loss_fn: LossFn, variables: Params,
               split: Split) -> Array:
  """`loss_fn` of the model's predictions on one side of a task."""
  return loss_fn(model.apply(variables, split.x), split.y)


def with_head(variables: Params, head: Params) -> Params:
  """`variables` with the parameters of the submodule `head` replaced."""
  return {**variables, 'params': {**variables['params'], 'head': head}}


def concat_splits(a: Split, b: Split) -> Split:
  return Split(jnp.concatenate([a.x, b.x]), jnp.concatenate([a.y, b.y]))


def mean_over_tasks(tree: Any) -> Any:
  return jax.tree.map(lambda v: jnp.mean(v, axis=0), tree)
