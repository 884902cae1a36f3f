"""Everything a run needs, built from one config: `build_run(config) -> Run`.

The training loop, `evaluate.py`, `benchmark.py`, `second_order.py` and
`load_learner` all start here, so the sequence "resolve the config, make the
source, the model, the learner and the meta-optimizer, initialise the state,
jit the step" is written once.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import evaluate, precision, progress, step as step_lib
from metajax.algorithms import ALGORITHMS
from metajax.data import registry as data_registry
from metajax.config import Config
from metajax.data.source import ClassSplits, EpisodeSpec
from metajax.learner import MetaLearner
from metajax.optimizers import meta_optimizer
from metajax.types import LossFn, Params, Task


def make_model(config: Config) -> nn.Module:
  return config.model_spec.build(config.sections['model'], config.ways)


def make_learner(config: Config, model: nn.Module, loss_fn: LossFn) -> MetaLearner:
  """The learner of a config, computing in `--compute_dtype`."""
  learner = config.spec.build(config.sections['algorithm'], model, loss_fn)
  return precision.with_compute_dtype(learner, jnp.dtype(config.compute_dtype))


def task_chunk(config: Config) -> int:
  """Tasks vmapped together in a meta-step (`--task_chunk`, 0: chosen here).

  On a CPU, convolutional models run fastest one task at a time inside a
  `lax.scan` (a vmap over a meta-batch of Omniglot tasks is slower and
  streams every task's activations through memory at once: docs/benchmarks.md);
  the MLP of sinusoid regression, and every model on an accelerator, run
  fastest with the whole meta-batch in one vmap.
  """
  if config.task_chunk:
    return config.task_chunk
  if config.model_spec.one_task_at_a_time_on_cpu and jax.default_backend() == 'cpu':
    return jax.device_count()  # one task per device per scan iteration
  return config.meta_batch_size


@dataclasses.dataclass
class Run:
  """A resolved config and what it builds.

  Attributes:
    config: the resolved config (every algorithm setting filled in).
    source: the task source, or None when built without data.
    model, loss_fn, metric_fn, metric: the model and the dataset's objective.
    learner: the algorithm.
    optimizer: the meta-optimizer.
  """
  config: Config
  source: Optional[Any]
  model: nn.Module
  loss_fn: LossFn
  metric_fn: LossFn
  metric: str
  learner: MetaLearner
  optimizer: optax.GradientTransformation

  @property
  def supervised(self) -> bool:
    """Whether it trains on supervised batches (a learner with a `batch_loss`)."""
    return self.learner.batch_loss is not None

  def example_task(self) -> Task:
    config = self.config
    return config.data.example_task(config.sections['dataset'], config.ways, config.shots)

  def init_state(self) -> step_lib.TrainState:
    """The state before the first meta-step (seeded by `--seed`)."""
    return step_lib.create_train_state(self.learner, self.optimizer,
                                       jax.random.PRNGKey(self.config.seed), self.example_task())

  def step_fn(self, mesh=None, donate: bool = True):
    """The jitted meta-step (`step.make_meta_train_step`)."""
    return step_lib.make_meta_train_step(self.learner, self.optimizer, donate=donate,
                                         task_chunk=task_chunk(self.config), mesh=mesh)

  def train_batches(self, start: int, stop: int, share=None):
    """The training batches of steps start..stop-1 (supervised ones for `batch_loss`).

    `share` = (first, count): this process's tasks of each meta-batch; a
    supervised run has none (the loop refuses one over several processes).
    """
    if self.supervised:
      return self.source.supervised_batches(start, stop)
    return self.source.batches(start, stop, share)

  def evaluate(self, theta: Params, split: str = 'test', num_tasks: Optional[int] = None,
               show_progress: bool = False) -> list[dict]:
    """Held-out records (one per `--eval_inner_steps` count) of meta-parameters `theta`."""
    config = self.config
    num_tasks = num_tasks or config.eval_tasks
    counts = config.eval_inner_steps if self.learner.adapts else (0,)
    parts = getattr(self.source, 'parts', {None: self.source})  # a mixed run: each source
    bar = progress.Progress(num_tasks * len(counts) * len(parts),
                            desc=f'evaluating on {split} tasks', enabled=show_progress,
                            unit='task')
    records = []
    try:
      for name, source in parts.items():
        batches = lambda source=source: progress.counted(
            source.eval_batches(split, num_tasks), bar, lambda tasks: len(tasks.support.y),
            close=False)
        part = evaluate.evaluate(self.learner, self.metric_fn, self.metric, theta, batches,
                                 jax.random.PRNGKey(0), config.eval_inner_steps)
        for r in part:
          r.update({'source': name} if name is not None else {})
          if isinstance(source, ClassSplits):  # which files were scored
            r['data'] = source.split_fingerprint(split)
        records += part
    finally:
      bar.close()
    fixed = config.episodes == 'fixed'
    for r in records:
      r.update(split=split, algorithm=config.algorithm, dataset=config.dataset,
               ways=config.ways if fixed else None, shots=config.shots if fixed else None,
               query=config.eval_query if fixed else None, episodes=config.episodes,
               batch_norm=config.get('batch_norm'))
    return records

  def for_episodes(self, ways: Optional[int] = None, shots: Optional[int] = None,
                   eval_inner_steps: Optional[tuple[int, ...]] = None,
                   show_progress: bool = False) -> 'Run':
    """This run's learner on held-out episodes of other ways, shots or inner steps.

    The result has a task source (made here if the episodes change or this
    run has none). Only learners whose classes come from the support set can
    take other ways or shots; one with an N-way head is refused, naming the flag.
    """
    changes = {k: v for k, v in (('ways', ways), ('shots', shots)) if v is not None}
    config = self.config
    if changes and not self.learner.any_ways:
      any_ways = ', '.join(name for name, spec in ALGORITHMS.items() if spec.any_ways)
      raise ValueError(f'--{next(iter(changes))}: only learners whose classes come from the '
                       f'support set ({any_ways}) can be tested on other episodes than they '
                       f'trained on; the head of {config.algorithm} has {config.ways} outputs')
    if changes:
      config = config.replace(train_ways=config.train_ways, query=config.query,
                              eval_query=config.eval_query, **changes)
    if eval_inner_steps is not None:
      config = config.replace(eval_inner_steps=tuple(eval_inner_steps))
    source = self.source
    if changes or source is None:
      source = make_source(config, show_progress)
    return dataclasses.replace(self, config=config, source=source)


def make_source(config: Config, show_progress: bool = True):
  """The task source of `config`: its dataset's settings and the episodes it asks for."""
  return config.data.make_source(config.sections['dataset'], config.episode_spec, show_progress)


def build_run(config: Config, *, data: bool = True, show_progress: bool = True) -> Run:
  """Builds `config`, filling the settings that come from the data.

  Args:
    config: a config.
    data: make the task source (False: a run to load or benchmark without data;
      settings that come from the data must then be set).
    show_progress: progress bars while the data loads.
  """
  source = make_source(config, show_progress) if data else None
  from_data = {**config.spec.from_data, **config.data.from_data}
  missing = {name: getattr(source, attribute) for name, attribute in from_data.items()
             if config.get(name) is None and source is not None
             and getattr(source, attribute, None) is not None}
  config = config.replace(**missing) if missing else config
  unset = [name for name in config.spec.from_data if config.get(name) is None]
  if unset:
    raise ValueError(f'--{unset[0]} comes from the data; set it to build without data')
  loss_fn, metric_fn, metric = config.data.objective
  model = make_model(config)
  learner = make_learner(config, model, loss_fn)
  return Run(config, source, model, loss_fn, metric_fn, metric, learner,
             meta_optimizer(config.sections['run']))


def episode_sampler(dataset: str, *, split: str = 'train', ways: int = 5, shots: int = 1,
                    query: int = 15, seed: Optional[int] = None, data_dir: Optional[str] = None,
                    show_progress: bool = False, **settings):
  """N-way K-shot episodes of a class-based dataset, for use from Python.

  `sampler.batch(index, num_tasks)` is a `Task` of numpy arrays with a leading
  task axis (support [num_tasks, N * K, ...], query [num_tasks, N * Q, ...],
  labels 0..N-1), a pure function of (seed, index); `sampler.episode(rng)`
  draws one task from a numpy generator.

  Args:
    dataset: 'omniglot' or 'miniimagenet'.
    split: 'train', 'val' or 'test'.
    ways, shots, query: N, K and Q (query examples per class).
    seed: the episodes' seed (default: 0 for 'train'; for 'val' and 'test',
      the seed of metajax's own held-out tasks, so batch 0.. are the tasks
      `evaluate.py` scores).
    data_dir: the data folder (default: the dataset's).
    show_progress: progress bars while the data is read.
    **settings: other settings of the dataset (`split` of Omniglot classes is
      `class_split` here, e.g. class_split='lake'; `rotations`).
  """
  if 'class_split' in settings:
    settings['split'] = settings.pop('class_split')
  spec = data_registry.get(dataset)
  if spec.task != 'classification':
    raise ValueError(f'dataset={dataset!r}: episodes of classes come from a classification '
                     'dataset (for sinusoid use metajax.data.sinusoid.SinusoidFamily)')
  if ways < 2:
    raise ValueError(f'ways={ways}: a classification task needs at least 2 classes')
  episodes = EpisodeSpec(ways=ways, train_ways=ways, shots=shots, query=query, eval_query=query,
                         seed=0 if seed is None else seed)
  if data_dir is not None:
    settings['data_dir'] = data_dir
  sampler = spec.source(episodes, show_progress, **settings).sampler(split)
  if seed is not None:
    sampler.seed = seed
  return sampler
