"""Task sources: everything the training loop needs to know about a dataset.

A source gives deterministic batches of tasks: `batches(start, stop)` yields
the batches of those steps, each a function of the seed and the step alone, so
a resumed run sees the same tasks as an uninterrupted one; `eval_batches(split,
n)` yields n held-out tasks in chunks, the same for every run whatever its
training seed, so that runs compare on equal tasks.
"""

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.config import Config
from metajax.data import episodes, miniimagenet, omniglot, splits
from metajax.data.sinusoid import SinusoidFamily
from metajax.types import Array, Split, Task

_EVAL_SEEDS = {'val': 1_000_001, 'test': 2_000_003}


def cross_entropy(logits: Array, labels: Array) -> Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: Array, labels: Array) -> Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


class SinusoidSource:
  """Sinusoid regression tasks with K support and Q query points."""
  eval_chunk = 1000

  def __init__(self, config: Config):
    self.family = SinusoidFamily()
    self.shots = config.shots
    self.query = config.num_query
    self.eval_query = config.num_eval_query
    self.batch_size = config.meta_batch_size
    self._key = jax.random.PRNGKey(config.seed)

  def train_batch(self, step: int, share=None) -> Task:
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
    key = jax.random.PRNGKey(_EVAL_SEEDS[split])
    return self.family.sample(key, num_tasks, self.shots, self.eval_query)

  def eval_batches(self, split: str, num_tasks: int) -> Iterator[Task]:
    tasks = self.eval_tasks(split, num_tasks)
    for start in range(0, num_tasks, self.eval_chunk):
      yield jax.tree.map(lambda v: v[start:start + self.eval_chunk], tasks)

class OmniglotSource:
  """N-way K-shot Omniglot episodes (28x28, strokes = 1) from a class split."""
  eval_images = 4000

  def __init__(self, config: Config, show_progress: bool = True):
    if config.data_source == 'tfds':
      data = omniglot.load_tfds(config.data_dir, show_progress=show_progress)
    else:
      data = omniglot.load(config.data_dir, show_progress=show_progress)
    self.batch_size = config.meta_batch_size
    make = lambda subset, ways, query, seed: episodes.EpisodeSampler(
        data.images, splits.classes(data.characters, config.split, subset,
                                    config.use_rotations),
        ways, config.shots, query, seed, name=f'{config.split} {subset}',
        transform=omniglot.augment if config.augment and subset == 'train' else None)
    self.train = make('train', config.num_train_ways, config.num_query, config.seed)
    self.held_out = {
        'val': make('val', config.num_ways, config.num_eval_query, _EVAL_SEEDS['val']),
        'test': make('test', config.num_ways, config.num_eval_query, _EVAL_SEEDS['test'])}
    self.supervised = config.algorithm == 'finetune'

  @property
  def num_train_classes(self) -> int:
    return len(self.train.classes)

  def train_batch(self, step: int, share=None) -> Task:
    """Meta-batch `step`, or its tasks `share` = (first, count) (multi-process).

    For `finetune`, one supervised mini-batch as a 1-task batch: the
    --meta_batch_size images with their class indices are the support set; the
    query set repeats the first image (unused).
    """
    if self.supervised:
      if share is not None:
        raise ValueError('--algorithm=finetune runs in one process (its batch is one task)')
      x, y = self.train.labelled_batch(step, self.batch_size)
      return jax.tree.map(lambda v: v[None], Task(Split(x, y), Split(x[:1], y[:1])))
    first, count = share if share is not None else (0, self.batch_size)
    return self.train.batch(step, count, first)

  def batches(self, start: int, stop: int, share=None) -> Iterator[Task]:
    return episodes.prefetch(lambda step: self.train_batch(step, share), start, stop)

  def eval_batches(self, split: str, num_tasks: int) -> Iterator[Task]:
    """Chunks of about `eval_images` images (50 tasks of 5-way 1-shot, 15 queries)."""
    sampler = self.held_out[split]
    chunk = max(1, self.eval_images // (sampler.ways * (sampler.shots + sampler.query)))
    for index, start in enumerate(range(0, num_tasks, chunk)):
      yield sampler.batch(index, min(chunk, num_tasks - start))


class MiniImageNetSource(OmniglotSource):
  """N-way K-shot miniImageNet episodes (84x84 RGB, normalised per channel)."""
  eval_images = 1600

  def __init__(self, config: Config, show_progress: bool = True):  # pylint: disable=super-init-not-called
    self.batch_size = config.meta_batch_size

    def make(subset, ways, query, seed, transform):
      _, images = miniimagenet.load(subset, config.data_dir, show_progress=show_progress)
      classes = np.stack([np.arange(len(images)), np.zeros(len(images), np.int64)], -1)
      return episodes.EpisodeSampler(images, classes, ways, config.shots, query, seed,
                                     name=f'miniimagenet {subset}', transform=transform)

    self.train = make('train', config.num_train_ways, config.num_query, config.seed,
                      miniimagenet.augment if config.augment else miniimagenet.normalize)
    self.held_out = {
        split: make(split, config.num_ways, config.num_eval_query, _EVAL_SEEDS[split],
                    miniimagenet.normalize) for split in ('val', 'test')}
    self.supervised = config.algorithm == 'finetune'


def make_source(config: Config, show_progress: bool = True):
  if config.dataset == 'sinusoid':
    return SinusoidSource(config)
  if config.dataset == 'omniglot':
    return OmniglotSource(config, show_progress)
  if config.dataset == 'miniimagenet':
    return MiniImageNetSource(config, show_progress)
  raise ValueError(f'--dataset={config.dataset!r} is not known')
