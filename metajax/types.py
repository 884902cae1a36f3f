"""Type aliases and the `Task` pytree shared by every part of metajax."""

from typing import Callable, NamedTuple

import chex
import jax

Array = jax.Array
PRNGKey = jax.Array
Params = chex.ArrayTree  # a pytree of arrays: flax variables, meta-parameters
Metrics = dict[str, Array]


class Split(NamedTuple):
  """Inputs and targets of one side of a task (support or query), or a supervised batch."""
  x: Array
  y: Array


class Task(NamedTuple):
  """A few-shot task: a support set to adapt on and a query set to score on.

  Classification labels run 0..N-1 inside each task. A batch of T tasks is the
  same structure with a leading axis of size T on every leaf, so `jax.vmap`
  maps over it.
  """
  support: Split
  query: Split


LossFn = Callable[[Array, Array], Array]  # (predictions, targets) -> scalar
