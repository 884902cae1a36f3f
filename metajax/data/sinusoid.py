"""Few-shot sinusoid regression, in pure JAX (MAML paper, section 5.1).

A task is y = A sin(x - phase) with A ~ U[0.1, 5.0], phase ~ U[0, pi], and
inputs x ~ U[-5, 5]. Each task has K support and Q query points.
"""

import dataclasses
import functools
import math
from typing import Iterator, Optional

import jax
import jax.numpy as jnp

from metajax.data import registry
from metajax.types import Array, PRNGKey, Split, Task


@dataclasses.dataclass(frozen=True)
class SinusoidFamily:
  """The distribution over sinusoid tasks; sampling is a pure function of a key."""
  amplitude: tuple[float, float] = (0.1, 5.0)
  phase: tuple[float, float] = (0.0, math.pi)
  x_range: tuple[float, float] = (-5.0, 5.0)

  def sample_functions(self, key: PRNGKey, num_tasks: int) -> tuple[Array, Array]:
    """Amplitudes and phases, each of shape [num_tasks]."""
    k_amp, k_phase = jax.random.split(key)
    amp = jax.random.uniform(k_amp, (num_tasks,), minval=self.amplitude[0],
                             maxval=self.amplitude[1])
    phase = jax.random.uniform(k_phase, (num_tasks,), minval=self.phase[0],
                               maxval=self.phase[1])
    return amp, phase

  @staticmethod
  def evaluate(amp: Array, phase: Array, x: Array) -> Array:
    """The true outputs y = amp * sin(x - phase), broadcast over x's trailing axes."""
    expand = (...,) + (None,) * (x.ndim - amp.ndim)
    return amp[expand] * jnp.sin(x - phase[expand])

  @functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
  def sample(self, key: PRNGKey, num_tasks: int, shots: int,
             query: int) -> Task:
    """A batch of tasks: x and y of shape [num_tasks, shots or query, 1]."""
    k_fn, k_x = jax.random.split(key)
    amp, phase = self.sample_functions(k_fn, num_tasks)
    x = jax.random.uniform(k_x, (num_tasks, shots + query, 1),
                           minval=self.x_range[0], maxval=self.x_range[1])
    y = self.evaluate(amp, phase, x)
    return Task(Split(x[:, :shots], y[:, :shots]),
                Split(x[:, shots:], y[:, shots:]))


class SinusoidSource:
  """Sinusoid regression tasks with K support and Q query points.

  Training batch `step` is a pure function of (seed, step); held-out tasks
  come from the fixed `registry.EVAL_SEEDS`.
  """
  eval_chunk = 1000

  def __init__(self, shots: int, query: int, eval_query: int, batch_size: int, seed: int):
    self.family = SinusoidFamily()
    self.shots, self.query, self.eval_query = shots, query, eval_query
    self.batch_size = batch_size
    self._key = jax.random.PRNGKey(seed)

  def train_batch(self, step: int, share: Optional[tuple[int, int]] = None) -> Task:
    """Meta-batch `step`, or its tasks `share` = (first, count) (multi-process).

    Each process draws the whole batch (microseconds for sinusoids, one jitted
    call) and keeps its share, so the shares are exactly one process's batch.
    """
    tasks = self._train_batch(self._key, step)
    if share is not None:
      tasks = jax.tree.map(lambda v: v[share[0]:share[0] + share[1]], tasks)
    return tasks

  @functools.partial(jax.jit, static_argnums=0)
  def _train_batch(self, key, step) -> Task:
    key = jax.random.fold_in(key, step)
    return self.family.sample(key, self.batch_size, self.shots, self.query)

  def batches(self, start: int, stop: int, share=None) -> Iterator[Task]:
    return (self.train_batch(step, share) for step in range(start, stop))

  def eval_tasks(self, split: str, num_tasks: int) -> Task:
    key = jax.random.PRNGKey(registry.EVAL_SEEDS[split])
    return self.family.sample(key, num_tasks, self.shots, self.eval_query)

  def eval_batches(self, split: str, num_tasks: int) -> Iterator[Task]:
    tasks = self.eval_tasks(split, num_tasks)
    for start in range(0, num_tasks, self.eval_chunk):
      yield jax.tree.map(lambda v: v[start:start + self.eval_chunk], tasks)


SPEC = registry.register(registry.DatasetSpec(
    name='sinusoid', task='regression', input_shape=(1,), models=('mlp',),
    # The MAML paper's K = 10, 25 tasks a meta-step, 20,000 steps; 100 query
    # points per held-out task.
    defaults={'shots': 10, 'eval_query': 100, 'meta_batch_size': 25, 'num_steps': 20000},
    make_source=lambda settings, episodes, show_progress: SinusoidSource(
        episodes.shots, episodes.query, episodes.eval_query, episodes.batch_size,
        episodes.seed)))
