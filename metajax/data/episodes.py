"""N-way K-shot episode sampling on the host (numpy), seeded and prefetched.

An episode picks N classes without replacement, gives them the labels
0..N-1 in random order, and draws K support and Q query images per class with
no image in both. Optionally (Lake et al. 2015's one-shot protocol) the N
classes come from one group (Omniglot: one alphabet), and the drawings are
the same for every class (Omniglot: drawing i of every character is drawer
i's, so the support set is one person's and the queries another's). A class
is a (character, rotation) pair, so rotated copies of a character are
separate classes and the rotation is applied per class.
Batch `step` of a sampler depends only on (seed, step): a resumed run sees the
same episodes as an uninterrupted one.
"""

import queue
import threading
from typing import Any, Callable, Iterator, Optional

import numpy as np

from metajax.data import variable
from metajax.data.catalog import Catalog, count
from metajax.data.source import EpisodeSpec
from metajax.data.variable import stack
from metajax.types import Split, Task


class EpisodeSampler:
  """Episodes from `images[character, drawing]` and a list of classes.

  Args:
    images: uint8 [num_characters, drawings, H, W] (or [..., H, W, C]); or,
      with `counts`, every image in one array [total, H, W(, C)], character
      by character (a character may have any number of images).
    classes: int [num_classes, 2]: (character index, quarter turns).
    ways, shots, query: N, K and Q.
    seed: seed of this sampler's episodes.
    name: the split's name, for error messages.
    transform: `(x, rng) -> x` on the float images [N, K + Q, H, W, C] of an
      episode in [0, 1] (normalisation, augmentation).
    names: what the caller calls `ways` and `query`, for error messages
      (e.g. ('train_ways', 'query'), ('ways', 'eval_query')).
    counts: images per character, for `images` of every image in one array.
    class_names: the characters' names, for error messages.
    groups: int [num_classes]: each class's group (e.g. alphabet); an episode
      then takes its N classes from one group, drawn uniformly among the
      groups with at least N classes.
    group_names: the groups' names (kept for callers, e.g. to name an episode's alphabet).
    shared_drawings: the same drawing indices for every class of an episode
      (needs the same number of images per character).
  """

  def __init__(self, images: np.ndarray, classes: np.ndarray, ways: int, shots: int,
               query: int, seed: int, name: str = 'train', transform=None,
               names: tuple[str, str] = ('ways', 'query'), counts: Optional[np.ndarray] = None,
               class_names: Optional[list[str]] = None, groups: Optional[np.ndarray] = None,
               group_names: Optional[list[str]] = None, shared_drawings: bool = False):
    self.classes = np.asarray(classes)
    if counts is None:  # [characters, drawings, ...]: seen as one array of images
      self.dense = True
      self.counts = np.full(images.shape[0], images.shape[1])
      self.starts = np.arange(images.shape[0]) * images.shape[1]
      images = images.reshape((-1,) + images.shape[2:])
    else:
      self.dense = False
      self.counts = np.asarray(counts)
      self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
    self.images, self.class_names, self.name = images, class_names, name
    self.ways, self.shots, self.query, self.seed = ways, shots, query, seed
    self.transform = transform
    ways_name, query_name = names
    if ways > len(self.classes):
      raise ValueError(f'{ways_name}={ways}: the {name} split has only '
                       f'{count(len(self.classes), "class")}')
    fewest = self.classes[np.argmin(self.counts[self.classes[:, 0]]), 0]
    if shots + query > self.counts[fewest]:
      which = (f'class {class_names[fewest]!r} of the {name} split has only'
               if class_names is not None else 'each class has only')
      raise ValueError(f'shots={shots} plus {query_name}={query} is {shots + query} images '
                       f'per class, but {which} {self.counts[fewest]}')
    self.shared_drawings = shared_drawings
    if shared_drawings and not np.all(self.counts[self.classes[:, 0]] == self.counts[0]):
      raise ValueError(f'the same drawings for every class need the same number of images per '
                       f'class; the {name} split has from {self.counts.min()} to '
                       f'{self.counts.max()}')
    self.groups = None
    if groups is not None:
      self.groups = np.asarray(groups)
      if self.groups.shape != (len(self.classes),):
        raise ValueError(f'groups must give one group per class: {len(self.classes)} classes, '
                         f'groups of shape {self.groups.shape}')
      ids, sizes = np.unique(self.groups, return_counts=True)
      self.members = [np.flatnonzero(self.groups == g) for g in ids[sizes >= ways]]
      self.skipped_groups = [(int(g), int(k)) for g, k in zip(ids, sizes) if k < ways]
      self.group_names = group_names
      if not self.members:
        raise ValueError(f'{ways_name}={ways}: episodes within one group need a group of at '
                         f'least {ways} classes; the largest group of the {name} split has '
                         f'{sizes.max()}')

  def episode(self, rng: np.random.Generator) -> Task:
    n, k, q = self.ways, self.shots, self.query
    chosen = self.choose(rng)
    if self.shared_drawings:
      drawings = np.tile(rng.permutation(self.counts[chosen[0, 0]])[:k + q], (n, 1))
    else:
      drawings = self.draw(rng, chosen[:, 0], k + q)
    x = self._load(chosen, drawings, rng)  # [n, k + q, H, W, C]
    labels = np.repeat(np.arange(n, dtype=np.int32)[:, None], k + q, axis=1)
    flat = lambda a: a.reshape((-1,) + a.shape[2:])
    return Task(Split(flat(x[:, :k]), flat(labels[:, :k])),
                Split(flat(x[:, k:]), flat(labels[:, k:])))

  def choose(self, rng: np.random.Generator) -> np.ndarray:
    """int [ways, 2]: an episode's classes, in label order (its first draws from `rng`)."""
    if self.groups is None:
      return self.classes[rng.choice(len(self.classes), self.ways, replace=False)]
    members = self.members[rng.integers(len(self.members))]
    return self.classes[members[rng.choice(len(members), self.ways, replace=False)]]

  def labelled_batch(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch `index` of ordinary supervised learning over every class of the split.

    Returns:
      `size` images [size, H, W, C] drawn uniformly (with replacement) from
      all (class, drawing) pairs, after the transform, and their class
      indices into `classes` (0..num_classes-1).
    """
    rng = np.random.default_rng([self.seed, index, 1])
    labels = rng.integers(0, len(self.classes), size)
    if self.dense:
      drawings = rng.integers(0, self.counts[0], size)
    else:
      drawings = (rng.random(size) * self.counts[self.classes[labels, 0]]).astype(np.int64)
    x = self._load(self.classes[labels], drawings[:, None], rng)[:, 0]
    return x, labels.astype(np.int32)

  def draw(self, rng: np.random.Generator, characters: np.ndarray, size) -> np.ndarray:
    """int [len(characters), max(size)]: distinct random images of each character.

    `size` is one number for all, or one per character (the rows are then
    filled up with -1).
    """
    keys = rng.random((len(characters), int(self.counts.max())))
    keys[np.arange(keys.shape[1]) >= self.counts[characters][:, None]] = 2.0  # not an image
    order = keys.argsort(axis=1)[:, :int(np.max(size))]
    if np.ndim(size):
      order[np.arange(order.shape[1]) >= np.asarray(size)[:, None]] = -1
    return order

  def _load(self, chosen: np.ndarray, drawings: np.ndarray, rng) -> np.ndarray:
    """Float images [a, b, H, W, C] of classes `chosen` [a, 2], drawings [a, b], transformed.

    A drawing of -1 gives a blank image (padding).
    """
    rows = self.starts[chosen[:, :1]] + np.maximum(drawings, 0)
    x = np.where((drawings >= 0).reshape(drawings.shape + (1,) * (self.images.ndim - 1)),
                 self.images[rows], 0) if np.any(drawings < 0) else self.images[rows]
    for i, turns in enumerate(chosen[:, 1]):
      if turns:
        x[i] = np.rot90(x[i], turns, axes=(1, 2))
    x = x.astype(np.float32) / 255.0
    if x.ndim == 4:
      x = x[..., None]
    if self.transform is not None:
      x = self.transform(x, rng).astype(np.float32)
    return x

  def batch(self, index: int, num_tasks: int, first: int = 0) -> Task:
    """Tasks first..first + num_tasks - 1 of batch `index`, stacked on a leading axis.

    Task i of batch `index` is drawn from its own generator, seeded by (seed,
    index, i), so any process can sample its share of a meta-batch alone and
    the shares together are the batch that one process would sample.
    """
    return stack([self.episode(np.random.default_rng([self.seed, index, first + i]))
                  for i in range(num_tasks)])


class EpisodeSource:
  """Episodes of a class-based image dataset: training batches and held-out tasks.

  Args:
    train: the sampler of training episodes (and supervised batches).
    held_out: {'val': ..., 'test': ...}: functions that make the held-out
      samplers, called on first use (so that a split's limits, such as its
      number of classes, matter only to a run that uses it).
    batch_size: tasks per meta-batch, or images per supervised batch.
    eval_images: images per evaluation chunk (bounds the memory of a chunk).
    catalog: what the source read, split by split (`metajax.data.catalog`):
      it answers `summary()`, `class_names(split)` and `split_fingerprint(split)`.
  """

  def __init__(self, train: EpisodeSampler, held_out: dict[str, Callable[[], EpisodeSampler]],
               batch_size: int, eval_images: int, catalog: Optional[Catalog] = None):
    self.train, self._held_out, self._samplers = train, held_out, {}
    self.batch_size, self.eval_images = batch_size, eval_images
    self.catalog = catalog

  def _catalog(self) -> Catalog:
    if self.catalog is None:
      raise ValueError(f'this {type(self).__name__} was built without a catalog of its data')
    return self.catalog

  def summary(self) -> str:
    """What the source read, in plain words (several lines).

    Each split's classes, images and example shape after conversion; what was
    converted, resized and skipped (and why); class folders without images.
    """
    return self._catalog().summary()

  def class_names(self, split: str) -> list[str]:
    """The class names of `split` ('train', 'val' or 'test'), in its sampler's order."""
    return self._catalog().class_names(split)

  def split_fingerprint(self, split: str) -> str:
    """sha256 of the sorted relative paths and sizes of the files of `split`'s classes."""
    return self._catalog().split_fingerprint(split)

  def sampler(self, split: str) -> EpisodeSampler:
    """The episode sampler of `split` ('train', 'val' or 'test')."""
    if split == 'train':
      return self.train
    if split not in self._samplers:
      self._samplers[split] = self._held_out[split]()
    return self._samplers[split]

  @property
  def num_train_classes(self) -> int:
    return len(self.train.classes)

  def train_batch(self, step: int, share: Optional[tuple[int, int]] = None) -> Task:
    """Meta-batch `step`, or its tasks `share` = (first, count) (multi-process)."""
    first, count = share if share is not None else (0, self.batch_size)
    return self.train.batch(step, count, first)

  def batches(self, start: int, stop: int, share=None) -> Iterator[Task]:
    return prefetch(lambda step: self.train_batch(step, share), start, stop)

  def supervised_batches(self, start: int, stop: int) -> Iterator[Split]:
    """Supervised batches `start..stop-1` of `batch_size` images and their class indices."""
    return prefetch(lambda step: Split(*self.train.labelled_batch(step, self.batch_size)),
                    start, stop)

  def eval_batches(self, split: str, num_tasks: int) -> Iterator[Task]:
    """Chunks of about `eval_images` images (50 tasks of 5-way 1-shot, 15 queries)."""
    sampler = self.sampler(split)
    chunk = max(1, self.eval_images // (sampler.ways * (sampler.shots + sampler.query)))
    for index, start in enumerate(range(0, num_tasks, chunk)):
      yield sampler.batch(index, min(chunk, num_tasks - start))


def make_sampler(spec: EpisodeSpec, subset: str, images: np.ndarray, classes: np.ndarray,
                 seed: int, **kwargs):
  """The episode sampler of `subset` that `spec` asks for.

  Fixed episodes: N-way K-shot with Q queries per class (`train_ways` or
  `ways`, `shots`, `query` or `eval_query`). Variable episodes: Meta-Dataset
  episodes (`metajax.data.variable`). `kwargs` go to `EpisodeSampler` (name,
  transform, counts, class_names).
  """
  if spec.episodes == 'variable':
    base = EpisodeSampler(images, classes, 2, 1, 1, seed, **kwargs)
    return variable.VariableEpisodeSampler(base, spec.max_ways, spec.max_support, seed)
  if subset == 'train':
    ways, query = spec.train_ways, spec.query
    names = ('train_ways' if spec.train_ways != spec.ways else 'ways'), 'query'
  else:
    ways, query = spec.ways, spec.eval_query
    names = 'ways', ('eval_query' if spec.eval_query != spec.query else 'query')
  return EpisodeSampler(images, classes, ways, spec.shots, query, seed, names=names, **kwargs)


def prefetch(make: Callable[[int], Any], start: int, stop: int, depth: int = 3) -> Iterator[Any]:
  """Yields make(start), ..., make(stop - 1), computed in a background thread."""
  buffer: queue.Queue = queue.Queue(maxsize=depth)
  done = threading.Event()

  def worker():
    try:
      for index in range(start, stop):
        item = make(index)
        while not done.is_set():
          try:
            buffer.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        if done.is_set():
          return
    except BaseException as e:  # re-raised in the consumer
      buffer.put(e)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    for _ in range(start, stop):
      item = buffer.get()
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    done.set()
