"""The registry of datasets: each data module registers one `DatasetSpec`.

A spec holds every fact about a dataset that the rest of metajax needs: the
input shape, whether its tasks are regression or classification (and so the
loss and metric), its default ways and query sizes, the models that fit it,
its data sources and class splits, and how a config makes its task source.
Adding a dataset is one module that registers its spec.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import jax.numpy as jnp
import numpy as np

from metajax import losses
from metajax.registry import Registry
from metajax.types import LossFn, Split, Task

# Held-out tasks come from these seeds, whatever the training seed, so runs and
# algorithms are compared on the same tasks.
EVAL_SEEDS = {'val': 1_000_001, 'test': 2_000_003}
# Config fields that only some datasets read (`DatasetSpec.settings`).
DATA_SETTINGS = ('image_size', 'image_channels', 'split_fractions', 'skip_unreadable')
OBJECTIVES = {  # task kind -> (loss, metric, metric name); lower MSE, higher accuracy is better
    'regression': (losses.mse, losses.mse, 'mse'),
    'classification': (losses.cross_entropy, losses.accuracy, 'accuracy'),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset, as config, builders and evaluation see it.

  Attributes:
    name: the registry name (`--dataset`).
    task: 'regression' or 'classification'.
    input_shape: shape of one input, e.g. (28, 28, 1); (1,) for sinusoid; or
      `(config) -> shape` for a dataset whose inputs a config sizes.
    make_source: `(config, show_progress) -> source` (see `metajax.data`).
    ways: default classes per task (1 for regression).
    query: default query examples per class (None: the number of shots).
    eval_query: default query examples per class in evaluation (None: = query).
    models: the models that fit it, the default first.
    channels: default Conv4 filters per block.
    sources: choices of `data_source`, the default first.
    class_splits: choices of `split` (class splits), the default first; () if fixed.
    check: `(config) -> None`, raising ValueError naming a flag for a setting
      the dataset cannot take.
    prepare: `(raw user images, config) -> model inputs`, as the training data
      was prepared.
    default_data_dir: `(config) -> folder` read when `config.data_dir` is unset
      (None: the dataset reads no folder).
    settings: the data settings (`DATA_SETTINGS`) it reads; giving it another
      is an error naming the flag.
    from_data: config settings filled from the task source when unset
      (setting -> attribute of the source), e.g. the image size found.
    with_argument: `(argument) -> spec` for a dataset named `NAME:ARGUMENT`
      (`folders:DIR`, `tfds:cifar100`); None: it takes no argument.
  """
  name: str
  task: str
  input_shape: Union[tuple[int, ...], Callable[[Any], tuple[int, ...]]]
  make_source: Callable[[Any, bool], Any]
  ways: int = 5
  query: Optional[int] = 15
  eval_query: Optional[int] = None
  models: tuple[str, ...] = ('conv4', 'resnet12')
  channels: int = 64
  sources: tuple[str, ...] = ('files',)
  class_splits: tuple[str, ...] = ()
  check: Optional[Callable[[Any], None]] = None
  prepare: Callable[[Any, Any], np.ndarray] = lambda images, config: np.asarray(images,
                                                                                np.float32)
  default_data_dir: Optional[Callable[[Any], Optional[str]]] = None
  settings: tuple[str, ...] = ()
  from_data: Mapping[str, str] = dataclasses.field(default_factory=dict)
  with_argument: Optional[Callable[[str], 'DatasetSpec']] = None

  def shape(self, config) -> tuple[int, ...]:
    """The shape of one input under `config`."""
    return self.input_shape(config) if callable(self.input_shape) else self.input_shape

  @property
  def objective(self) -> tuple[LossFn, LossFn, str]:
    """(loss_fn, metric_fn, metric name) of its tasks."""
    return OBJECTIVES[self.task]

  def example_task(self, config) -> Task:
    """A task of `config`'s shapes (zeros), to initialise or restore parameters."""
    shape, shots = self.shape(config), config.shots
    if self.task == 'regression':
      x = jnp.zeros((shots,) + shape)
      return Task(Split(x, x), Split(x, x))
    n = config.num_ways * shots
    x, y = jnp.zeros((n,) + shape), jnp.zeros((n,), jnp.int32)
    return Task(Split(x, y), Split(x, y))


DATASETS = Registry('dataset')
register = DATASETS.register


def get(name: str) -> DatasetSpec:
  """The spec of `--dataset=name`: a registered name, `NAME:ARGUMENT`, or several, comma-separated.

  Raises:
    ValueError: naming `dataset=` and what is wrong with it.
  """
  if ',' in name:
    from metajax.data import mixed  # pylint: disable=g-import-not-at-top
    return mixed.spec(name)
  base, _, argument = name.partition(':')
  spec = DATASETS.lookup(base)
  if not argument:
    return spec
  if spec.with_argument is None:
    raise ValueError(f'dataset={name!r}: {base} takes no argument after ":"')
  return spec.with_argument(argument)
