"""What every task source takes and gives: the episode settings and the `TaskSource` protocol.

A source is built by its dataset's `make_source(settings, episodes,
show_progress)` from the dataset's own settings section and an `EpisodeSpec`
(the episodes asked for), never from the whole run configuration.
"""

import dataclasses
from typing import Iterator, Optional, Protocol, runtime_checkable

from metajax import settings as settings_lib
from metajax.settings import setting
from metajax.types import Task

EPISODE_KINDS = ('fixed', 'variable')


@dataclasses.dataclass(frozen=True)
class EpisodeSettings(settings_lib.Section):
  """The episodes of a run: N-way K-shot with Q queries, or Meta-Dataset's variable ones."""
  ways: Optional[int] = setting(None, 'classes per task (N) (default: the dataset\'s)',
                                minimum=1)
  shots: int = setting(10, 'support examples per class (K)', minimum=1)
  query: Optional[int] = setting(None, 'query examples per class in training (default: '
                                 '--shots)', minimum=1)
  eval_query: Optional[int] = setting(None, 'query examples per class in evaluation tasks '
                                      '(default: --query)', minimum=1)
  train_ways: Optional[int] = setting(None, 'ways of training episodes, e.g. 60 for ProtoNets '
                                      '(default: --ways)', minimum=1)
  episodes: str = setting('fixed', 'fixed: N-way K-shot episodes (--ways, --shots, --query) | '
                          'variable: Meta-Dataset episodes (Triantafillou et al. 2020): 5 to '
                          '--max_ways ways, imbalanced shots, a support set of at most '
                          '--max_support, padded into a few shapes', choices=EPISODE_KINDS)
  max_ways: int = setting(50, '--episodes=variable: the most ways (Meta-Dataset: 50)',
                          minimum=5)
  max_support: int = setting(500, '--episodes=variable: the largest support set '
                             '(Meta-Dataset: 500)', minimum=1)

  def resolved(self) -> 'EpisodeSettings':
    """Unset sizes filled from the ones they follow (query from shots, ...)."""
    ways = 1 if self.ways is None else self.ways
    query = self.shots if self.query is None else self.query
    return self.replace(ways=ways, query=query,
                        eval_query=query if self.eval_query is None else self.eval_query,
                        train_ways=ways if self.train_ways is None else self.train_ways)

  def check(self) -> None:
    if self.episodes == 'variable' and self.max_support < self.max_ways:
      settings_lib.fail('max_support', self.max_support,
                        f'must be at least --max_ways={self.max_ways} (a support image per class)')


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """The episodes a source is asked for: sizes, kind, batch size and seed.

  Attributes:
    ways, train_ways: classes of held-out and of training tasks.
    shots: support examples per class.
    query, eval_query: query examples per class in training and held-out tasks.
    episodes: 'fixed' or 'variable' (Meta-Dataset).
    max_ways, max_support: the limits of variable episodes.
    batch_size: tasks per training batch.
    seed: the seed of training episodes (held-out ones have fixed seeds).
  """
  ways: int = 5
  train_ways: int = 5
  shots: int = 1
  query: int = 15
  eval_query: int = 15
  episodes: str = 'fixed'
  max_ways: int = 50
  max_support: int = 500
  batch_size: int = 1
  seed: int = 0

  @classmethod
  def of(cls, episodes: EpisodeSettings, batch_size: int, seed: int) -> 'EpisodeSpec':
    e = episodes.resolved()
    return cls(ways=e.ways, train_ways=e.train_ways, shots=e.shots, query=e.query,
               eval_query=e.eval_query, episodes=e.episodes, max_ways=e.max_ways,
               max_support=e.max_support, batch_size=batch_size, seed=seed)

  def replace(self, **changes) -> 'EpisodeSpec':
    return dataclasses.replace(self, **changes)


@runtime_checkable
class TaskSource(Protocol):
  """What every task source provides.

  Training batches are a pure function of (seed, step), so a resumed run sees
  the same tasks; held-out batches are the same for every run.

  Optional capabilities, checked with `isinstance`: `DataSummary` (what the
  source read, in plain words) and, for class-based sources, `ClassSplits`
  (each split's class names and a fingerprint of its files).
  """

  def batches(self, start: int, stop: int, share=None) -> Iterator[Task]:
    """The training batches of steps start..stop-1 (`share`: this process's tasks)."""

  def eval_batches(self, split: str, num_tasks: int) -> Iterator[Task]:
    """`num_tasks` held-out tasks of `split` ('val' or 'test'), in chunks."""


@runtime_checkable
class DataSummary(Protocol):
  """An optional capability of a `TaskSource`: what it read, in plain words."""

  def summary(self) -> str:
    """Several lines of plain words.

    Each split's classes, images and example shape after conversion; what was
    converted, resized and skipped (and why); class folders without images.
    """


@runtime_checkable
class ClassSplits(Protocol):
  """An optional capability of class-based `TaskSource`s: the classes and files of each split."""

  def class_names(self, split: str) -> list[str]:
    """The class names of `split` ('train', 'val', 'test'), in its sampler's order."""

  def split_fingerprint(self, split: str) -> str:
    """sha256 of the sorted relative paths and sizes of the files of `split`'s classes."""
