"""Type aliases and the `Task` pytree shared by every part of metajax."""

from typing import Callable, NamedTuple, Optional

import chex
import jax

Array = jax.Array
PRNGKey = jax.Array
Params = chex.ArrayTree  # a pytree of arrays: flax variables, meta-parameters
Metrics = dict[str, Array]


class Split(NamedTuple):
  """Inputs and targets of one side of a task (support or query), or a supervised batch.

  `mask` (bool [n]) marks the real examples of a padded split (variable-size
  episodes padded to a fixed shape for `jit`): padding rows count in no loss,
  metric, class mean or batch-norm statistic. None: every row is real.
  """
  x: Array
  y: Array
  mask: Optional[Array] = None


class Task(NamedTuple):
  """A few-shot task: a support set to adapt on and a query set to score on.

  Classification labels run 0..N-1 inside each task. A batch of T tasks is the
  same structure with a leading axis of size T on every leaf, so `jax.vmap`
  maps over it.
  """
  support: Split
  query: Split


LossFn = Callable[[Array, Array], Array]  # (predictions, targets) -> scalar
