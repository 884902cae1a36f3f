"""Meta-Dataset episodes: variable ways and shots, padded into a few shapes for `jit`.

The sampler of Triantafillou et al. (2020, section 3.2), for the classes of
one split:

1. ways N uniform in [5, min(max_ways, classes)] (the paper: max_ways = 50);
2. query images per class q = min(10, floor(half the images of the chosen
   class that has fewest));
3. support size |S| = min(max_support, sum_c ceil(beta * min(100, |c| - q)))
   with beta uniform in (0, 1] (the paper: max_support = 500);
4. shots of class c: k_c = min(floor(R_c * (|S| - N)) + 1, |c| - q), with
   R_c proportional to exp(alpha_c) |c|, alpha_c uniform in [log 0.5, log 2]
   (class imbalance).

The class hierarchies of ImageNet and Omniglot that the paper uses to choose
related classes are not modelled: classes are drawn uniformly.

Under `jit` every distinct shape compiles anew, so an episode's support and
query sets are padded up to the next size in `BUCKETS` (zeros, label -1,
`Split.mask` False); a run compiles at most once per (support, query) bucket
pair it meets, and the padding changes no loss or gradient (tests/test_masks.py).

Reference:
  Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to
  Learn from Few Examples", ICLR 2020.
"""

import math

import numpy as np

from metajax.data.catalog import count
from metajax.types import Split, Task

MIN_WAYS = 5
MAX_QUERY = 10      # query images per class, at most
MAX_SHOTS = 100     # support images per class, at most
BUCKETS = (16, 32, 64, 128, 256, 512, 1024)


def bucket(n: int) -> int:
  """The padded size of a set of `n` examples: the smallest bucket that holds it."""
  for size in BUCKETS:
    if n <= size:
      return size
  return int(2 ** math.ceil(math.log2(n)))


def buckets_up_to(largest: int) -> list[int]:
  """The bucket sizes a set of at most `largest` examples can take."""
  return [b for b in BUCKETS if b < bucket(largest)] + [bucket(largest)]


class VariableEpisodeSampler:
  """Meta-Dataset episodes of the classes of an `episodes.EpisodeSampler`.

  Args:
    base: the split's fixed-shape sampler (its images, classes, transform).
    max_ways: the largest number of ways (the paper: 50).
    max_support: the largest support set (the paper: 500).
    seed: seed of the episodes (batch `index` depends on (seed, index) only).
  """

  def __init__(self, base, max_ways: int = 50, max_support: int = 500, seed: int = 0):
    classes = len(base.classes)
    if classes < MIN_WAYS:
      raise ValueError(f'episodes=variable: the {base.name} split has '
                       f'{count(classes, "class")}; Meta-Dataset episodes have at least '
                       f'{MIN_WAYS} ways')
    fewest = int(base.counts[base.classes[:, 0]].min())
    if fewest < 2:
      raise ValueError(f'episodes=variable: a class of the {base.name} split has '
                       f'{count(fewest, "image")}; an episode needs one support and one query '
                       'image per class')
    self.base, self.seed = base, seed
    self.max_ways, self.max_support = min(max_ways, classes), max_support
    # For evaluation chunking, as EpisodeSampler: the largest episode.
    self.ways, self.shots, self.query = self.max_ways, 1, MAX_QUERY

  @property
  def classes(self):
    return self.base.classes

  @property
  def shapes(self) -> list[tuple[int, int]]:
    """Every (support, query) padded size an episode can take: the compile bound."""
    query = self.max_ways * MAX_QUERY
    return [(s, q) for s in buckets_up_to(self.max_support) for q in buckets_up_to(query)]

  def episode(self, rng: np.random.Generator) -> Task:
    """One episode, each side padded to its bucket."""
    base = self.base
    ways = int(rng.integers(MIN_WAYS, self.max_ways + 1))
    chosen = base.classes[rng.choice(len(base.classes), ways, replace=False)]
    sizes = base.counts[chosen[:, 0]]
    query = int(min(MAX_QUERY, sizes.min() // 2))
    beta = 1.0 - rng.random()  # (0, 1]
    support = int(min(self.max_support,
                      np.ceil(beta * np.minimum(MAX_SHOTS, sizes - query)).sum()))
    weights = np.exp(rng.uniform(np.log(0.5), np.log(2.0), ways)) * sizes
    shares = weights / weights.sum()
    shots = np.minimum(np.floor(shares * (support - ways)).astype(int) + 1, sizes - query)
    drawings = base.draw(rng, chosen[:, 0], shots + query)
    x = base._load(chosen, drawings, rng)  # pylint: disable=protected-access
    rows = np.arange(drawings.shape[1])
    in_support = rows[None, :] < shots[:, None]
    in_query = (rows[None, :] >= shots[:, None]) & (rows[None, :] < (shots + query)[:, None])
    labels = np.broadcast_to(np.arange(ways, dtype=np.int32)[:, None], drawings.shape)
    return Task(_padded(x[in_support], labels[in_support], bucket(int(shots.sum()))),
                _padded(x[in_query], labels[in_query], bucket(ways * query)))

  def batch(self, index: int, num_tasks: int, first: int = 0) -> Task:
    """Tasks first.. of batch `index`, padded to the largest bucket among them, stacked."""
    return stack_padded([self.episode(np.random.default_rng([self.seed, index, first + i]))
                         for i in range(num_tasks)])

  def labelled_batch(self, index: int, size: int):
    return self.base.labelled_batch(index, size)


def _padded(x: np.ndarray, y: np.ndarray, size: int) -> Split:
  n = len(y)
  pad = size - n
  return Split(np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
               np.concatenate([y, -np.ones(pad, np.int32)]).astype(np.int32),
               np.arange(size) < n)


def stack_padded(tasks: list[Task]) -> Task:
  """Tasks stacked on a new axis; masked (padded) ones first padded to their largest sizes."""
  if tasks[0].support.mask is not None:
    shape = tuple(max(t[side].x.shape[0] for t in tasks) for side in (0, 1))
    tasks = [repad(t, shape) for t in tasks]
  return stack(tasks)


def repad(task: Task, shape) -> Task:
  """`task` with each side padded further, to `shape` = (support, query) rows."""
  return Task(*(split if split.x.shape[0] == size else
                _padded(split.x[split.mask], split.y[split.mask], size)
                for split, size in zip(task, shape)))


def stack(tasks: list[Task]) -> Task:
  """Tasks of equal shapes stacked on a new leading axis (masks too, if they have them)."""
  return Task(*(Split(*(None if leaves[0] is None else np.stack(leaves)
                        for leaves in zip(*splits)))
                for splits in zip(*tasks)))
