"""Task sources: everything the training loop needs to know about a dataset.

A source gives deterministic batches of tasks: `train_batch(step)` depends only
on the seed and the step, so a resumed run sees the same tasks as an
uninterrupted one, and `eval_tasks(split, n)` gives the same held-out tasks to
every run, whatever its training seed, so that runs compare on equal tasks.
"""

import functools

import jax

from metajax.config import Config
from metajax.data.sinusoid import SinusoidFamily, mse
from metajax.types import Array, Task

_EVAL_SEEDS = {'val': 1_000_001, 'test': 2_000_003}


class SinusoidSource:
  """Sinusoid regression tasks with K support and Q query points."""
  metric = 'mse'
  loss_fn = staticmethod(mse)
  output_size = 1

  def __init__(self, config: Config):
    self.family = SinusoidFamily()
    self.shots = config.shots
    self.query = config.num_query
    self.eval_query = config.num_eval_query
    self.batch_size = config.meta_batch_size
    self._key = jax.random.PRNGKey(config.seed)

  def train_batch(self, step: int) -> Task:
    return self._train_batch(self._key, step)

  @functools.partial(jax.jit, static_argnums=0)
  def _train_batch(self, key, step) -> Task:
    key = jax.random.fold_in(key, step)
    return self.family.sample(key, self.batch_size, self.shots, self.query)

  def eval_tasks(self, split: str, num_tasks: int) -> Task:
    key = jax.random.PRNGKey(_EVAL_SEEDS[split])
    return self.family.sample(key, num_tasks, self.shots, self.eval_query)

  def example_task(self) -> Task:
    return jax.tree.map(lambda v: v[0], self.train_batch(0))

  @staticmethod
  def metric_fn(predictions: Array, targets: Array) -> Array:
    return mse(predictions, targets)


def make_source(config: Config):
  if config.dataset == 'sinusoid':
    return SinusoidSource(config)
  raise ValueError(f'--dataset={config.dataset!r} is not known')
