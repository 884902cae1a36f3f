"""The frozen experiment configuration: settings, their validation and resolution.

Scripts build a `Config` from their flags; the library never reads flags.
Every field is named after the flag that sets it, so errors name the flag.
Algorithm settings left unset (None) take the algorithm's own defaults
(`metajax.algorithms.registry`) in `resolve()`; dataset facts come from the
dataset's spec (`metajax.data.registry`). Optimizer strings become optax
objects in `metajax.optimizers`, which only this layer reads.
"""

import dataclasses
import json
from typing import Any, Callable, Optional

import optax

from metajax import validation
from metajax.algorithms import ALGORITHMS
from metajax.data import registry as data_registry
from metajax.optimizers import INNER_OPTIMIZERS
from metajax.validation import ALGORITHM_SETTINGS

DEFAULT_EVAL_INNER_STEPS = (0, 1, 10)

# Fields that may change when a run is resumed: they change how long it runs or
# what it logs, never what one step computes.
RESUMABLE_FIELDS = frozenset({
    'num_steps', 'eval_every', 'checkpoint_every', 'log_every', 'eval_tasks', 'val_tasks',
    'eval_inner_steps', 'eval_query', 'max_checkpoints', 'data_dir', 'data_source', 'task_chunk',
    'mesh_shape', 'coordinator_address', 'num_processes', 'process_id',
})


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment. Defaults: MAML on sinusoid regression, K = 10."""
  algorithm: str = 'maml'
  dataset: str = 'sinusoid'
  ways: Optional[int] = None       # classes per task (None: the dataset's)
  shots: int = 10                  # support examples per class (K)
  query: Optional[int] = None      # query examples per class (None: the dataset's)
  # Algorithm settings; None: the algorithm's default (resolve()).
  inner_steps: Optional[int] = None
  inner_lr: Optional[float] = None
  inner_optimizer: Optional[str] = None
  remat: Optional[bool] = None
  backprop_steps: Optional[int] = None  # differentiate the last k inner steps (None: all)
  zero_head: Optional[bool] = None      # maml, fomaml, mamlpp: every inner loop from a zero head
  imaml_lambda: Optional[float] = None  # iMAML's proximal strength
  cg_steps: Optional[int] = None        # iMAML's conjugate-gradient iterations
  predictor_head: Optional[str] = None  # predictor: cosine | dot | euclidean
  finetune_head: Optional[str] = None   # finetune: linear (Baseline) | cosine (Baseline++)
  pretrain_classes: Optional[int] = None  # finetune: C, set from the data when None
  # MAML++ (mamlpp): each of its pieces, switchable.
  msl_steps: Optional[int] = None        # multi-step loss, weights annealed over N steps (0: off)
  first_order_steps: Optional[int] = None  # first-order for the first N meta-steps (0: off)
  per_step_bn: Optional[bool] = None     # batch-norm scale and bias per inner step
  learn_inner_lr: Optional[bool] = None  # meta-learned per-layer per-step inner rates
  # The outer loop.
  meta_batch_size: int = 25
  meta_lr: float = 1e-3
  meta_optimizer: str = 'adam'
  num_steps: int = 20000
  seed: int = 0
  hidden: tuple[int, ...] = (40, 40)
  lr_schedule: str = 'constant'     # constant | cosine | warmup_cosine (of --meta_lr)
  warmup_steps: int = 0             # warmup_cosine: linear warm-up steps
  min_meta_lr: float = 0.0          # cosine, warmup_cosine: the rate at --num_steps
  compute_dtype: str = 'float32'    # float32 | bfloat16 (model and inner loop)
  mesh_shape: tuple[int, ...] = ()  # devices per mesh axis (tasks[, model]); (): all on tasks
  coordinator_address: Optional[str] = None  # multi-process: host:port of process 0, or auto
  num_processes: int = 1            # multi-process: number of processes
  process_id: int = 0               # multi-process: index of this process
  task_chunk: int = 0               # tasks vmapped together; 0: auto (run.task_chunk)
  eval_every: int = 0              # validate every N meta-steps (0: no validation)
  checkpoint_every: int = 1000
  log_every: int = 100
  max_checkpoints: int = 3
  eval_tasks: int = 600
  val_tasks: Optional[int] = None   # episodes per validation (None: --eval_tasks)
  eval_inner_steps: Optional[tuple[int, ...]] = None  # None: the algorithm's, else 0,1,10
  eval_query: Optional[int] = None  # query points per eval task (None: dataset's)
  # Few-shot classification.
  data_dir: Optional[str] = None   # None: the dataset's default folder
  data_source: str = 'files'       # files (official zips or folders) | tfds
  split: Optional[str] = None     # class split (None: the dataset's first, e.g. vinyals)
  rotations: Optional[bool] = None  # None: on for vinyals, off for lake
  train_ways: Optional[int] = None  # ways of training episodes (ProtoNets); None: = ways
  channels: Optional[int] = None    # filters per block of Conv4 (None: the dataset's)
  model: Optional[str] = None       # mlp | conv4 | resnet12 (None: the dataset's first)
  augment: bool = False             # random crops / shifts of training images
  batch_norm: str = 'transductive'  # transductive | support: whose statistics normalise a query
  episodes: str = 'fixed'           # fixed (N-way K-shot) | variable (Meta-Dataset)
  max_ways: int = 50                # variable episodes: the most ways
  max_support: int = 500            # variable episodes: the largest support set
  # Datasets of one's own (folders, tfds): None = as found in the data.
  image_size: Optional[int] = None
  image_channels: Optional[int] = None
  split_fractions: Optional[tuple[float, ...]] = None  # train, val, test shares of the classes
  skip_unreadable: bool = False

  def __post_init__(self):
    for name in ('hidden', 'eval_inner_steps', 'mesh_shape', 'split_fractions'):
      if getattr(self, name) is not None:
        kind = float if name == 'split_fractions' else int
        object.__setattr__(self, name, tuple(kind(v) for v in getattr(self, name)))

  @property
  def spec(self):
    """The algorithm's `AlgorithmSpec`."""
    return ALGORITHMS[self.algorithm]

  @property
  def data(self):
    """The dataset's `DatasetSpec`."""
    return data_registry.get(self.dataset)

  @property
  def num_ways(self) -> int:
    return self.data.ways if self.ways is None else self.ways

  @property
  def num_train_ways(self) -> int:
    return self.num_ways if self.train_ways is None else self.train_ways

  @property
  def num_query(self) -> int:
    if self.query is not None:
      return self.query
    return self.shots if self.data.query is None else self.data.query

  @property
  def num_eval_query(self) -> int:
    if self.eval_query is not None:
      return self.eval_query
    return self.num_query if self.data.eval_query is None else self.data.eval_query

  @property
  def class_split(self) -> Optional[str]:
    """`--split`, or the dataset's default class split (None: it has none)."""
    splits = self.data.class_splits
    return self.split or (splits[0] if splits else None)

  @property
  def model_name(self) -> str:
    return self.data.models[0] if self.model is None else self.model

  @property
  def num_channels(self) -> int:
    return self.data.channels if self.channels is None else self.channels

  def settings(self) -> dict[str, Any]:
    """The algorithm's settings, by name (what its `AlgorithmSpec.build` reads)."""
    return {name: getattr(self, name) for name in self.spec.settings}

  def inner_optimizer_fn(self) -> Callable[[float], optax.GradientTransformation]:
    """`--inner_optimizer` as an optax transformation at a given learning rate."""
    return INNER_OPTIMIZERS[self.inner_optimizer or 'sgd']

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)

  def for_algorithm(self, name: str) -> 'Config':
    """This config for algorithm `name`, less the settings that `name` does not use."""
    unused = {s: None for s in ALGORITHM_SETTINGS if s not in ALGORITHMS[name].settings}
    return self.replace(algorithm=name, **unused)

  def resolve(self) -> 'Config':
    """The config with every unset algorithm setting at the algorithm's default."""
    self.validate()
    changes = {}
    for name in ALGORITHM_SETTINGS + ('eval_inner_steps',):
      default = self.spec.default(name, self.dataset)
      if getattr(self, name) is None and default is not None:
        changes[name] = default
    if self.eval_inner_steps is None and 'eval_inner_steps' not in changes:
      changes['eval_inner_steps'] = DEFAULT_EVAL_INNER_STEPS
    changes['split'] = self.class_split
    return self.replace(**changes).validate()

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> 'Config':
    """A config from `to_dict()` (a run's config.json).

    Runs written before the algorithm registry stored every algorithm setting,
    used or not; the settings that their algorithm does not use are dropped.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
      raise ValueError(f'unknown config fields: {sorted(unknown)}')
    config = cls(**values)
    try:  # runs before class splits were per dataset recorded 'vinyals' for every dataset
      if not config.data.class_splits:
        config = config.replace(split=None)
    except ValueError:
      pass  # an unknown dataset: validation names it
    return config.for_algorithm(config.algorithm) if config.algorithm in ALGORITHMS else config

  def validate(self) -> 'Config':
    """Raises ValueError naming the flag and value for any bad setting."""
    validation.check(self)
    return self


def differing_fields(saved: Config, requested: Config) -> list[str]:
  """The fields, outside `RESUMABLE_FIELDS`, in which two resolved configs differ.

  `num_steps` may change on resume (to extend a run), except under a learning
  rate schedule, whose shape it sets.
  """
  resumable = RESUMABLE_FIELDS
  if saved.lr_schedule != 'constant' or requested.lr_schedule != 'constant':
    resumable = resumable - {'num_steps'}
  return [f.name for f in dataclasses.fields(Config)
          if f.name not in resumable
          and getattr(saved, f.name) != getattr(requested, f.name)]
