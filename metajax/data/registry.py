"""The registry of datasets: each data module registers one `DatasetSpec`.

A spec holds every fact about a dataset that the rest of metajax needs: its
settings section (declared once, beside its code), its defaults for the other
sections (ways, shots, meta-batch, ...), the input shape, whether its tasks
are regression or classification (and so the loss and metric), the models
that fit it, and how its settings and an `EpisodeSpec` make its task source.
Adding a dataset is one module that registers its spec.
"""

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Union

import jax.numpy as jnp
import numpy as np

from metajax import losses
from metajax import settings as settings_lib
from metajax.data.source import EpisodeSpec
from metajax.registry import Registry
from metajax.types import LossFn, Split, Task

# Held-out tasks come from these seeds, whatever the training seed, so runs and
# algorithms are compared on the same tasks.
EVAL_SEEDS = {'val': 1_000_001, 'test': 2_000_003}
OBJECTIVES = {  # task kind -> (loss, metric, metric name); lower MSE, higher accuracy is better
    'regression': (losses.mse, losses.mse, 'mse'),
    'classification': (losses.cross_entropy, losses.accuracy, 'accuracy'),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset, as the run layer, builders and evaluation see it.

  Attributes:
    name: the registry name (`--dataset`).
    task: 'regression' or 'classification'.
    input_shape: shape of one input, e.g. (28, 28, 1); (1,) for sinusoid; or
      `(settings) -> shape` for a dataset whose inputs its settings size.
    make_source: `(settings, episodes: EpisodeSpec, show_progress) -> source`
      (a `metajax.data.source.TaskSource`).
    settings: its settings section (a `metajax.settings.Section` class).
    defaults: its defaults for settings of other sections (ways, shots,
      query, meta-batch, Conv4 channels, ...).
    models: the models that fit it, the default first.
    check: `(settings) -> None`, raising ValueError naming a flag for settings
      that do not go together.
    prepare: `(raw user images, settings) -> model inputs`, as the training
      data was prepared.
    default_data_dir: `(settings) -> folder` read when `data_dir` is unset
      (None: the dataset reads no folder).
    from_data: its settings filled from the task source when unset
      (setting -> attribute of the source), e.g. the image size found.
    with_argument: `(argument) -> spec` for a dataset named `NAME:ARGUMENT`
      (`folders:DIR`, `tfds:cifar100`); None: it takes no argument.
  """
  name: str
  task: str
  input_shape: Union[tuple[int, ...], Callable[[Any], tuple[int, ...]]]
  make_source: Callable[[Any, Any, bool], Any]
  settings: type = settings_lib.Section
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  models: tuple[str, ...] = ('conv4', 'resnet12')
  check: Optional[Callable[[Any], None]] = None
  prepare: Callable[[Any, Any], np.ndarray] = lambda images, settings: np.asarray(images,
                                                                                  np.float32)
  default_data_dir: Optional[Callable[[Any], Optional[str]]] = None
  from_data: Mapping[str, str] = dataclasses.field(default_factory=dict)
  with_argument: Optional[Callable[[str], 'DatasetSpec']] = None

  def section(self, **values):
    """Its settings section from `values` (by name) over its own defaults, validated.

    Raises:
      ValueError: naming the setting, for one it does not declare or a value out of limits.
    """
    own = settings_lib.names(self.settings)
    for name, value in values.items():
      if name not in own:
        settings_lib.fail(name, value, f'--dataset={self.name} does not use it (its settings: '
                          f'{", ".join("--" + n for n in own) or "none"})')
    if values.get('data_dir') is not None:
      values['data_dir'] = os.path.abspath(os.path.expanduser(values['data_dir']))
    merged = {**{k: v for k, v in self.defaults.items() if k in own}, **values}
    section = settings_lib.build(self.settings, merged).validate()
    if self.check is not None:
      self.check(section)
    return section

  def source(self, episodes: Optional[EpisodeSpec] = None, show_progress: bool = False, **values):
    """Its task source of `episodes` (an `EpisodeSpec`; default 5-way 1-shot, 15 queries).

        source = DATASETS['omniglot'].source(EpisodeSpec(ways=20), data_dir='~/omniglot')

    `values` are the dataset's own settings (`section(**values)`); nothing of a run's.
    """
    return self.make_source(self.section(**values), episodes or EpisodeSpec(), show_progress)

  def shape(self, settings) -> tuple[int, ...]:
    """The shape of one input under its `settings`."""
    return self.input_shape(settings) if callable(self.input_shape) else self.input_shape

  @property
  def objective(self) -> tuple[LossFn, LossFn, str]:
    """(loss_fn, metric_fn, metric name) of its tasks."""
    return OBJECTIVES[self.task]

  def example_task(self, settings, ways: int, shots: int) -> Task:
    """A task of these shapes (zeros), to initialise or restore parameters."""
    shape = self.shape(settings)
    if self.task == 'regression':
      x = jnp.zeros((shots,) + shape)
      return Task(Split(x, x), Split(x, x))
    n = ways * shots
    x, y = jnp.zeros((n,) + shape), jnp.zeros((n,), jnp.int32)
    return Task(Split(x, y), Split(x, y))


DATASETS = Registry('dataset')
register = DATASETS.register
_MIXERS: list[Callable[[str], DatasetSpec]] = []


def register_mixer(mixer: Callable[[str], DatasetSpec]) -> None:
  """`mixer(name)`: the spec of several comma-separated sources (`metajax.data.mixed`)."""
  _MIXERS[:] = [mixer]


def get(name: str) -> DatasetSpec:
  """The spec of `--dataset=name`: a registered name, `NAME:ARGUMENT`, or several, comma-separated.

  Raises:
    ValueError: naming `dataset=` and what is wrong with it.
  """
  if ',' in name:
    if not _MIXERS:
      raise ValueError(f'dataset={name!r}: several sources need metajax.data.mixed')
    return _MIXERS[0](name)
  base, _, argument = name.partition(':')
  spec = DATASETS.lookup(base)
  if not argument:
    return spec
  if spec.with_argument is None:
    raise ValueError(f'dataset={name!r}: {base} takes no argument after ":"')
  return spec.with_argument(argument)
