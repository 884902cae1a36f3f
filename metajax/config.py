"""The frozen experiment configuration and its validation.

Scripts build a `Config` from their flags; the library never reads flags.
Every field is named after the flag that sets it, so errors name the flag.
"""

import dataclasses
import inspect
import json
from typing import Any, Optional

import optax

from metajax.inner import INNER_OPTIMIZERS

DATASETS = ('sinusoid', 'omniglot', 'miniimagenet')
MODELS = ('mlp', 'conv4', 'resnet12')
ALGORITHM_NAMES = ('maml', 'fomaml', 'reptile', 'anil', 'metasgd', 'imaml', 'pretrained',
                   'protonet', 'predictor', 'finetune')
ANY_WAYS = ('protonet', 'predictor', 'finetune')  # heads sized by the support set
PREDICTOR_HEADS = ('cosine', 'dot', 'euclidean')
FINETUNE_HEADS = ('linear', 'cosine')  # Baseline, Baseline++
LR_SCHEDULES = ('constant', 'warmup_cosine')
TRUNCATABLE = ('maml', 'anil', 'metasgd')  # take --backprop_steps
SPLITS = ('vinyals', 'lake')

# Fields that may change when a run is resumed: they change how long it runs or
# what it logs, never what one step computes.
RESUMABLE_FIELDS = frozenset({
    'num_steps', 'eval_every', 'checkpoint_every', 'log_every', 'eval_tasks',
    'eval_inner_steps', 'eval_query', 'max_checkpoints', 'data_dir', 'data_source', 'task_chunk', 'mesh_shape',
    'coordinator_address', 'num_processes', 'process_id',
})


@dataclasses.dataclass(frozen=True)
class Config:
  """One experiment. Defaults: MAML on sinusoid regression, K = 10."""
  algorithm: str = 'maml'
  dataset: str = 'sinusoid'
  ways: Optional[int] = None       # classes per task (None: the dataset's)
  shots: int = 10                  # support examples per class (K)
  query: Optional[int] = None      # query examples per class (None: = shots)
  inner_steps: int = 1
  inner_lr: float = 0.01
  inner_optimizer: str = 'sgd'
  meta_batch_size: int = 25
  meta_lr: float = 1e-3
  meta_optimizer: str = 'adam'
  num_steps: int = 20000
  seed: int = 0
  hidden: tuple[int, ...] = (40, 40)
  remat: bool = False
  backprop_steps: Optional[int] = None  # differentiate the last k inner steps (None: all)
  imaml_lambda: float = 1.0        # iMAML's proximal strength
  cg_steps: int = 5                # iMAML's conjugate-gradient iterations
  predictor_head: str = 'cosine'    # predictor: cosine | dot | euclidean
  finetune_head: str = 'linear'     # finetune: linear (Baseline) | cosine (Baseline++)
  pretrain_classes: Optional[int] = None  # finetune: C, set from the data when None
  lr_schedule: str = 'constant'     # constant | warmup_cosine (of --meta_lr)
  warmup_steps: int = 0             # warmup_cosine: linear warm-up steps
  compute_dtype: str = 'float32'    # float32 | bfloat16 (model and inner loop)
  mesh_shape: tuple[int, ...] = ()  # devices per mesh axis (tasks[, model]); (): all on tasks
  coordinator_address: Optional[str] = None  # multi-process: host:port of process 0, or auto
  num_processes: int = 1            # multi-process: number of processes
  process_id: int = 0               # multi-process: index of this process
  task_chunk: int = 0               # tasks vmapped together; 0: auto (builders.task_chunk)
  eval_every: int = 0              # 0: evaluate on validation tasks only at the end
  checkpoint_every: int = 1000
  log_every: int = 100
  max_checkpoints: int = 3
  eval_tasks: int = 600
  eval_inner_steps: tuple[int, ...] = (0, 1, 10)
  eval_query: Optional[int] = None  # query points per eval task (None: dataset's)
  # Few-shot classification.
  data_dir: Optional[str] = None   # None: $METAJAX_OMNIGLOT_DIR or ~/.cache/metajax/omniglot
  data_source: str = 'files'       # files (official zips or folders) | tfds
  split: str = 'vinyals'
  rotations: Optional[bool] = None  # None: on for vinyals, off for lake
  train_ways: Optional[int] = None  # ways of training episodes (ProtoNets); None: = ways
  channels: Optional[int] = None    # filters per block of Conv4 (None: 64 Omniglot, 32 miniImageNet)
  model: Optional[str] = None       # mlp | conv4 | resnet12 (None: mlp for sinusoid, else conv4)
  augment: bool = False             # random crops and flips of miniImageNet training episodes

  def __post_init__(self):
    for name in ('hidden', 'eval_inner_steps', 'mesh_shape'):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

  @property
  def num_ways(self) -> int:
    if self.ways is not None:
      return self.ways
    return 1 if self.dataset == 'sinusoid' else 5

  @property
  def num_train_ways(self) -> int:
    return self.num_ways if self.train_ways is None else self.train_ways

  @property
  def num_query(self) -> int:
    if self.query is not None:
      return self.query
    return self.shots if self.dataset == 'sinusoid' else 15

  @property
  def num_eval_query(self) -> int:
    if self.eval_query is not None:
      return self.eval_query
    return 100 if self.dataset == 'sinusoid' else self.num_query

  @property
  def model_name(self) -> str:
    if self.model is not None:
      return self.model
    return 'mlp' if self.dataset == 'sinusoid' else 'conv4'

  @property
  def num_channels(self) -> int:
    if self.channels is not None:
      return self.channels
    return 32 if self.dataset == 'miniimagenet' else 64

  @property
  def use_rotations(self) -> bool:
    return self.split == 'vinyals' if self.rotations is None else self.rotations

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> 'Config':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
      raise ValueError(f'unknown config fields: {sorted(unknown)}')
    return cls(**values)

  def validate(self) -> 'Config':
    """Raises ValueError naming the flag and value for any bad setting."""

    def fail(flag, value, why):
      raise ValueError(f'--{flag}={value!r}: {why}')

    if self.algorithm not in ALGORITHM_NAMES:
      fail('algorithm', self.algorithm, f'choose one of {", ".join(ALGORITHM_NAMES)}')
    if self.dataset not in DATASETS:
      fail('dataset', self.dataset, f'choose one of {", ".join(DATASETS)}')
    if self.inner_optimizer not in INNER_OPTIMIZERS:
      fail('inner_optimizer', self.inner_optimizer,
           f'choose one of {", ".join(INNER_OPTIMIZERS)}')
    if self.inner_steps < (0 if self.algorithm == 'predictor' else 1):
      fail('inner_steps', self.inner_steps,
           'must be >= 0' if self.algorithm == 'predictor' else 'must be a positive integer')
    if self.num_processes < 1:
      fail('num_processes', self.num_processes, 'must be a positive integer')
    if not 0 <= self.process_id < self.num_processes:
      fail('process_id', self.process_id, f'must be in [0, --num_processes={self.num_processes})')
    if self.num_processes > 1 and not self.coordinator_address:
      fail('num_processes', self.num_processes, 'a multi-process run needs --coordinator_address')
    if self.compute_dtype not in ('float32', 'bfloat16'):
      fail('compute_dtype', self.compute_dtype, 'choose float32 or bfloat16')
    if self.finetune_head not in FINETUNE_HEADS:
      fail('finetune_head', self.finetune_head, f'choose one of {", ".join(FINETUNE_HEADS)}')
    if self.algorithm == 'finetune' and self.dataset == 'sinusoid':
      fail('algorithm', self.algorithm, 'Baseline/Baseline++ classify; for sinusoid use pretrained')
    if self.pretrain_classes is not None and self.pretrain_classes < 2:
      fail('pretrain_classes', self.pretrain_classes, 'must be >= 2')
    if self.lr_schedule not in LR_SCHEDULES:
      fail('lr_schedule', self.lr_schedule, f'choose one of {", ".join(LR_SCHEDULES)}')
    if self.predictor_head not in PREDICTOR_HEADS:
      fail('predictor_head', self.predictor_head, f'choose one of {", ".join(PREDICTOR_HEADS)}')
    for flag in ('shots', 'meta_batch_size', 'num_steps',
                 'checkpoint_every', 'log_every', 'eval_tasks',
                 'max_checkpoints'):
      if getattr(self, flag) < 1:
        fail(flag, getattr(self, flag), 'must be a positive integer')
    if not 0 <= self.warmup_steps < self.num_steps:
      fail('warmup_steps', self.warmup_steps, f'must be in [0, --num_steps={self.num_steps})')
    if self.query is not None and self.query < 1:
      fail('query', self.query, 'must be a positive integer')
    if self.eval_query is not None and self.eval_query < 1:
      fail('eval_query', self.eval_query, 'must be a positive integer')
    if self.backprop_steps is not None:
      if self.algorithm not in TRUNCATABLE:
        fail('backprop_steps', self.backprop_steps,
             f'truncation applies to {", ".join(TRUNCATABLE)}, not --algorithm={self.algorithm}')
      if self.backprop_steps < 0:
        fail('backprop_steps', self.backprop_steps, 'must be >= 0')
    if not self.imaml_lambda > 0:
      fail('imaml_lambda', self.imaml_lambda, 'must be > 0')
    if self.cg_steps < 1:
      fail('cg_steps', self.cg_steps, 'must be a positive integer')
    if self.task_chunk < 0:
      fail('task_chunk', self.task_chunk, 'must be >= 0 (0: chosen for the backend)')
    if self.task_chunk and self.meta_batch_size % self.task_chunk:
      fail('task_chunk', self.task_chunk,
           f'--meta_batch_size={self.meta_batch_size} is not a multiple of it')
    if self.eval_every < 0:
      fail('eval_every', self.eval_every, 'must be >= 0 (0: only at the end)')
    if any(s < 0 for s in self.eval_inner_steps) or not self.eval_inner_steps:
      fail('eval_inner_steps', ','.join(map(str, self.eval_inner_steps)),
           'must be a non-empty list of integers >= 0')
    if not self.inner_lr > 0:
      fail('inner_lr', self.inner_lr, 'must be > 0')
    if not self.meta_lr > 0:
      fail('meta_lr', self.meta_lr, 'must be > 0')
    if not self.hidden or any(h < 1 for h in self.hidden):
      fail('hidden', ','.join(map(str, self.hidden)),
           'must be a non-empty list of positive widths')
    if self.dataset == 'sinusoid':
      if self.ways not in (None, 1):
        fail('ways', self.ways, 'sinusoid regression has no classes; leave --ways unset')
      if self.algorithm == 'protonet':
        fail('algorithm', self.algorithm, 'Prototypical Networks need classes, not sinusoid')
      if self.model_name != 'mlp':
        fail('model', self.model, 'sinusoid regression takes the mlp')
    else:
      if self.num_ways < 2:
        fail('ways', self.ways, 'a classification task needs at least 2 classes')
      if self.train_ways is not None and self.train_ways < 2:
        fail('train_ways', self.train_ways, 'a classification task needs at least 2 classes')
      if self.data_source not in ('files', 'tfds'):
        fail('data_source', self.data_source, 'choose files or tfds')
      if self.data_source == 'tfds' and self.dataset != 'omniglot':
        fail('data_source', self.data_source, 'only Omniglot is read from tfds')
      if self.split not in SPLITS:
        fail('split', self.split, f'choose one of {", ".join(SPLITS)}')
      if self.channels is not None and self.channels < 1:
        fail('channels', self.channels, 'must be a positive integer')
      if self.model_name not in ('conv4', 'resnet12'):
        fail('model', self.model, 'image tasks take conv4 or resnet12')
      if self.augment and self.dataset == 'omniglot' and self.algorithm != 'finetune':
        fail('augment', self.augment, 'Omniglot augmentation (random shifts) is for '
             '--algorithm=finetune pre-training')
    if self.num_train_ways != self.num_ways and self.algorithm not in ANY_WAYS:
      fail('train_ways', self.train_ways,
           f'only {" and ".join(ANY_WAYS)} can train with other ways than they test '
           f'(--ways={self.num_ways}): '
           f'{self.algorithm} has an {self.num_ways}-way head')
    meta_optimizer(self)  # raises for an unknown meta-optimizer
    return self


def learning_rate(config: Config):
  """--meta_lr, or its warm-up + cosine-decay schedule over --num_steps (optax)."""
  if config.lr_schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.meta_lr, warmup_steps=config.warmup_steps,
        decay_steps=config.num_steps)
  return config.meta_lr


def meta_optimizer(config: Config) -> optax.GradientTransformation:
  """`optax.<meta_optimizer>(learning_rate(config))`: any optax optimizer taking a learning rate."""
  factory = getattr(optax, config.meta_optimizer, None)
  takes_lr = False
  if callable(factory) and not config.meta_optimizer.startswith('_'):
    try:
      takes_lr = 'learning_rate' in inspect.signature(factory).parameters
    except (TypeError, ValueError):
      takes_lr = False
  if not takes_lr:
    raise ValueError(
        f'--meta_optimizer={config.meta_optimizer!r}: not an optax optimizer '
        'with a learning_rate (e.g. adam, sgd, adamw, rmsprop, lamb)')
  return factory(learning_rate(config))


def differing_fields(saved: Config, requested: Config) -> list[str]:
  """The fields, outside `RESUMABLE_FIELDS`, in which two configs differ.

  `num_steps` may change on resume (to extend a run), except under a learning
  rate schedule, whose shape it sets.
  """
  resumable = RESUMABLE_FIELDS
  if saved.lr_schedule != 'constant' or requested.lr_schedule != 'constant':
    resumable = resumable - {'num_steps'}
  return [f.name for f in dataclasses.fields(Config)
          if f.name not in resumable
          and getattr(saved, f.name) != getattr(requested, f.name)]
