"""A run's settings: the run section, the episodes, and the chosen parts' own sections.

    config = Config(algorithm='maml', dataset='omniglot', inner_steps=2)
    config.inner_lr          # 0.4: MAML's default on Omniglot
    config.sections['run']   # RunSettings(num_steps=8000, ...)

Each part declares its settings once (`metajax.settings`): the run section
here, the episodes in `metajax.data.source`, each algorithm, dataset and
model beside its code. A `Config` is built from the settings given by name
(the flags' names) and resolved at once. A value comes from, in this order:
what was given; the algorithm's default on this dataset; the algorithm's
default; the dataset's default; the setting's own default. A setting that
none of the chosen parts declares is an error naming it and the part.
Scripts build a `Config` from their flags (`metajax.cli`); the library never
reads flags.
"""

import dataclasses
import json
import os
from typing import Any, Optional

from metajax import settings as settings_lib
from metajax.algorithms import ALGORITHMS
from metajax.data import registry as data_registry
from metajax.data.source import EpisodeSettings, EpisodeSpec
from metajax.models import MODELS
from metajax.optimizers import check_meta_optimizer
from metajax.settings import fail, setting

LR_SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
COMPUTE_DTYPES = ('float32', 'bfloat16')
PART_NAMES = ('algorithm', 'dataset', 'model')
SECTIONS = ('run', 'episodes', 'algorithm', 'dataset', 'model')

# Settings that may change when a run is resumed: they change how long it runs or
# what it logs, never what one step computes.
RESUMABLE_FIELDS = frozenset({
    'num_steps', 'eval_every', 'checkpoint_every', 'log_every', 'eval_tasks', 'val_tasks',
    'eval_inner_steps', 'eval_query', 'max_checkpoints', 'data_dir', 'data_source', 'task_chunk',
    'mesh_shape', 'coordinator_address', 'num_processes', 'process_id',
})


@dataclasses.dataclass(frozen=True)
class RunSettings(settings_lib.Section):
  """The outer loop, evaluation, checkpoints, devices and precision of a run."""
  num_steps: int = setting(20000, 'meta-steps to train (raise it to extend a finished run)',
                           minimum=1)
  meta_batch_size: int = setting(25, 'tasks per meta-step (finetune: images per pre-training '
                                 'mini-batch)', minimum=1)
  meta_optimizer: str = setting('adam', 'any optax optimizer that takes a learning_rate (adam, '
                                'sgd, adamw, ...)')
  meta_lr: float = setting(1e-3, 'meta-optimizer learning rate', above=0)
  lr_schedule: str = setting('constant', 'constant | cosine: cosine decay from --meta_lr to '
                             '--min_meta_lr at --num_steps (MAML++) | warmup_cosine: linear '
                             'warm-up over --warmup_steps, then the same decay (optax)',
                             choices=LR_SCHEDULES)
  warmup_steps: int = setting(0, 'warm-up steps of --lr_schedule=warmup_cosine', minimum=0)
  min_meta_lr: float = setting(0.0, 'the meta learning rate at --num_steps under a cosine '
                               '--lr_schedule', minimum=0)
  seed: int = setting(0, 'seed of initialisation and training tasks')
  eval_every: int = setting(0, 'evaluate on validation tasks every N meta-steps (0: never)',
                            minimum=0)
  val_tasks: Optional[int] = setting(None, 'validation tasks in each --eval_every validation '
                                     '(default: --eval_tasks)', minimum=1)
  eval_tasks: int = setting(600, 'held-out tasks in each evaluation', minimum=1)
  eval_inner_steps: tuple[int, ...] = setting((0, 1, 10), 'inner-step counts to evaluate after',
                                              nonempty=True, item_minimum=0)
  checkpoint_every: int = setting(1000, 'save a checkpoint every N meta-steps', minimum=1)
  log_every: int = setting(100, 'log training metrics every N meta-steps', minimum=1)
  max_checkpoints: int = setting(3, 'checkpoints kept in the workdir', minimum=1)
  compute_dtype: str = setting('float32', 'dtype of the model and the inner loop; '
                               'meta-parameters and the meta-optimizer stay float32',
                               choices=COMPUTE_DTYPES)
  task_chunk: int = setting(0, 'tasks vmapped together; a scan over chunks adds up their '
                            'meta-gradients, so memory holds one chunk (0: auto, one task per '
                            'device for image models on a CPU, the whole meta-batch otherwise)',
                            minimum=0)
  mesh_shape: tuple[int, ...] = setting((), 'devices per axis of the device mesh '
                                        '(tasks[,model]); default: every device on the tasks '
                                        'axis, which shards the meta-batch', item_minimum=1)
  coordinator_address: Optional[str] = setting(None, 'multi-process runs: host:port of process '
                                               '0 for jax.distributed.initialize, or auto '
                                               '(TPU pods, SLURM)')
  num_processes: int = setting(1, 'multi-process runs: number of processes', minimum=1)
  process_id: int = setting(0, 'multi-process runs: index of this process', minimum=0)

  def resolved(self) -> 'RunSettings':
    return self.replace(val_tasks=self.eval_tasks if self.val_tasks is None else self.val_tasks)

  def check(self) -> None:
    if self.process_id >= self.num_processes:
      fail('process_id', self.process_id, f'must be in [0, --num_processes={self.num_processes})')
    if self.num_processes > 1 and not self.coordinator_address:
      fail('num_processes', self.num_processes, 'a multi-process run needs --coordinator_address')
    if self.warmup_steps >= self.num_steps:
      fail('warmup_steps', self.warmup_steps, f'must be in [0, --num_steps={self.num_steps})')
    if self.min_meta_lr > self.meta_lr:
      fail('min_meta_lr', self.min_meta_lr, f'must be in [0, --meta_lr={self.meta_lr}]')
    if self.task_chunk and self.meta_batch_size % self.task_chunk:
      fail('task_chunk', self.task_chunk,
           f'--meta_batch_size={self.meta_batch_size} is not a multiple of it')
    check_meta_optimizer(self.meta_optimizer)


def _base(dataset: str) -> str:
  """'folders' of 'folders:DIR': the name a dataset's defaults are filed under."""
  return dataset.partition(':')[0]


def declared() -> set[str]:
  """Every setting name that some section declares (and the part names)."""
  classes = [RunSettings, EpisodeSettings]
  classes += [s.settings for s in ALGORITHMS.values()]
  classes += [s.settings for s in data_registry.DATASETS.values()]
  classes += [s.settings for s in MODELS.values()]
  return {n for cls in classes for n in settings_lib.names(cls)} | set(PART_NAMES)


def _owners(name: str) -> list[str]:
  """'--algorithm=imaml', ...: the registered parts that declare setting `name`."""
  found = [f'--algorithm={a}' for a, spec in ALGORITHMS.items()
           if name in settings_lib.names(spec.settings)]
  found += [f'--dataset={d}' for d, spec in data_registry.DATASETS.items()
            if name in settings_lib.names(spec.settings)]
  found += [f'--model={m}' for m, spec in MODELS.items()
            if name in settings_lib.names(spec.settings)]
  return found


def _with_data_dir(section, dspec):
  """The dataset's section with the folder it reads written out (config.json records it).

  A given folder is made absolute; an unset one is the dataset's default folder.
  """
  if 'data_dir' not in section.__dataclass_fields__:
    return section
  folder = section.data_dir
  if folder is None and dspec.default_data_dir is not None:
    folder = dspec.default_data_dir(section)
  if folder is None:
    return section
  return section.replace(data_dir=os.path.abspath(os.path.expanduser(folder)))


class Config:
  """One run's settings, resolved: the chosen parts and a section of settings for each.

  `Config(**given)` takes settings by their flag names; `config.NAME` reads a
  setting of any of its sections; `config.sections` holds them by section
  ('run', 'episodes', 'algorithm', 'dataset', 'model'). It is resolved (the
  data folder written out) and validated when built, so a run only reads it.

  Raises:
    ValueError: naming the setting, for one that the chosen parts do not use
      or a value out of its limits.
  """

  def __init__(self, algorithm: str = 'maml', dataset: str = 'sinusoid',
               model: Optional[str] = None, **given):
    aspec = ALGORITHMS.lookup(algorithm)
    try:
      dspec = data_registry.get(dataset)
    except ValueError as e:
      raise ValueError(f'--{e}') from None
    model = dspec.models[0] if model is None else model
    if model not in dspec.models:
      fail('model', model, f'--dataset={dataset} takes {", ".join(dspec.models)}')
    mspec = MODELS.lookup(model)
    given = {k: v for k, v in given.items() if v is not None}
    classes = {'run': RunSettings, 'episodes': EpisodeSettings, 'algorithm': aspec.settings,
               'dataset': dspec.settings, 'model': mspec.settings}
    known = {n for cls in classes.values() for n in settings_lib.names(cls)}
    for name in given:
      if name not in known:
        parts = {'algorithm': algorithm, 'dataset': dataset, 'model': model}
        owners = _owners(name)
        if not owners:
          raise ValueError(f'{name}={given[name]!r}: no such setting')
        kind = owners[0][2:].partition('=')[0]
        uses = ', '.join(f'--{n}' for n in settings_lib.names(classes[kind])) or 'none'
        fail(name, given[name], f'--{kind}={parts[kind]} does not use it (its settings: {uses})')
    if ':' in dataset and 'data_dir' in given and dspec.defaults.get('data_dir') != (
        os.path.abspath(os.path.expanduser(str(given['data_dir'])))):  # config.json records it
      fail('data_dir', given['data_dir'], f'--dataset={dataset} names its folder already')
    layers = [dspec.defaults, aspec.defaults, aspec.dataset_defaults.get(_base(dataset), {}),
              given]
    values = {}
    for layer in layers:
      values.update({k: v for k, v in layer.items() if k in known})
    self.algorithm, self.dataset, self.model = algorithm, dataset, model
    self.given = dict(given)
    self.sections = {}
    for section, cls in classes.items():
      built = settings_lib.build(cls, {k: v for k, v in values.items()
                                       if k in settings_lib.names(cls)})
      self.sections[section] = built.resolved() if hasattr(built, 'resolved') else built
    self.sections['dataset'] = _with_data_dir(self.sections['dataset'], dspec)
    # What the parts are: the algorithm's `AlgorithmSpec`, the dataset's
    # `DatasetSpec`, the model's `ModelSpec`.
    self.spec, self.data, self.model_spec = aspec, dspec, mspec
    # Every setting, resolved, as a plain attribute (`config.NAME`).
    for section in self.sections.values():
      for name in section.__dataclass_fields__:
        self.__dict__[name] = getattr(section, name)
    run = self.sections['run']
    # The episodes that the data sources are asked for.
    self.episode_spec = EpisodeSpec.of(self.sections['episodes'], run.meta_batch_size, run.seed)
    self.validate()

  def __getattr__(self, name: str) -> Any:
    if name.startswith('__') or 'sections' not in self.__dict__:
      raise AttributeError(name)
    for section in self.sections.values():
      if name in section.__dataclass_fields__:
        return getattr(section, name)
    raise AttributeError(f'{name}: no setting of --algorithm={self.algorithm}, '
                         f'--dataset={self.dataset} or --model={self.model}')

  def get(self, name: str, default: Any = None) -> Any:
    """Setting `name`, or `default` if none of the chosen parts has it."""
    try:
      return getattr(self, name)
    except AttributeError:
      return default

  def has(self, name: str) -> bool:
    return any(name in s.__dataclass_fields__ for s in self.sections.values())

  # Changes.
  def replace(self, **changes) -> 'Config':
    """This config with some settings changed (and the ones following them re-resolved)."""
    values = {**self.given, **{p: getattr(self, p) for p in PART_NAMES}, **changes}
    return Config(**values)

  def with_values(self, **values) -> 'Config':
    """This config with `values` fixed as if given (e.g. settings found in the data)."""
    return self.replace(**values)

  def for_algorithm(self, name: str) -> 'Config':
    """This config for algorithm `name`, less the settings of this algorithm that `name` lacks."""
    own = set(settings_lib.names(self.spec.settings))
    theirs = set(settings_lib.names(ALGORITHMS[name].settings))
    given = {k: v for k, v in self.given.items() if k not in own or k in theirs}
    return Config(**{**given, 'algorithm': name, 'dataset': self.dataset, 'model': self.model})

  def resolve(self) -> 'Config':
    """The config, validated (it is resolved when built)."""
    return self.validate()

  def validate(self) -> 'Config':
    """Raises ValueError naming the flag and value of the first bad setting."""
    for section in self.sections.values():
      section.validate()
    _check_parts(self)
    return self

  # Records.
  def flat(self) -> dict[str, Any]:
    """Every resolved setting by name, the part names first (unset ones left out)."""
    out = {p: getattr(self, p) for p in PART_NAMES}
    for section in self.sections.values():
      out.update(section.to_dict())
    return out

  def to_dict(self) -> dict[str, Any]:
    """The settings by section, each part's section headed by its name (config.json)."""
    out = {}
    for section, values in self.sections.items():
      head = {'name': getattr(self, section)} if section in PART_NAMES else {}
      out[section] = {**head, **values.to_dict()}
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> 'Config':
    """A config from `to_dict()` (a run's config.json), or from the flat records of 0.2.

    Runs written by metajax 0.2 stored every setting of every part flat, unset
    ones as null; the settings that their parts do not use are dropped.
    """
    if isinstance(values.get('run'), dict):
      given = {}
      for section in SECTIONS:
        given.update({k: v for k, v in values.get(section, {}).items() if k != 'name'})
        if section in PART_NAMES:
          given[section] = values.get(section, {}).get('name')
      return cls(**given)
    unknown = set(values) - declared()
    if unknown:
      raise ValueError(f'unknown config fields: {sorted(unknown)}')
    given = {k: v for k, v in values.items() if v is not None}
    probe = cls(**{p: given[p] for p in PART_NAMES if p in given})
    known = {n for s in probe.sections.values() for n in s.__dataclass_fields__}
    return cls(**{k: v for k, v in given.items() if k in known or k in PART_NAMES})

  def __eq__(self, other) -> bool:
    return isinstance(other, Config) and self.flat() == other.flat()

  def __hash__(self):
    return hash(json.dumps(self.flat(), sort_keys=True, default=str))

  def __repr__(self) -> str:
    return f'Config({", ".join(f"{k}={v!r}" for k, v in self.flat().items())})'


def _check_parts(config: Config) -> None:
  """The limits that tie the parts together."""
  spec, data = config.spec, config.data
  episodes = config.sections['episodes']
  if data.task not in spec.tasks:
    fail('algorithm', config.algorithm,
         f'{config.algorithm} handles {" and ".join(spec.tasks)} tasks; '
         f'--dataset={config.dataset} has {data.task} tasks')
  if data.task == 'classification':
    for name in ('ways', 'train_ways'):
      if getattr(episodes, name) < 2:
        fail(name, getattr(episodes, name), 'a classification task needs at least 2 classes')
  elif episodes.ways != 1 or episodes.train_ways != 1:
    name = 'ways' if episodes.ways != 1 else 'train_ways'
    fail(name, getattr(episodes, name), f'{config.dataset} regression has no classes; leave '
         f'--{name} unset')
  if episodes.episodes == 'variable':
    if data.task != 'classification':
      fail('episodes', episodes.episodes, f'--dataset={config.dataset} has no classes')
    if not spec.any_ways:
      any_ways = ', '.join(name for name, s in ALGORITHMS.items() if s.any_ways)
      fail('episodes', episodes.episodes,
           f'episodes of varying ways need a learner whose classes come from the support set '
           f'({any_ways}); {config.algorithm} has a fixed-size head')
  if episodes.train_ways != episodes.ways and not spec.any_ways:
    any_ways = ', '.join(name for name, s in ALGORITHMS.items() if s.any_ways)
    fail('train_ways', episodes.train_ways,
         f'only learners whose classes come from the support set ({any_ways}) can train with '
         f'other ways than they test (--ways={episodes.ways}): '
         f'the head of {config.algorithm} has {episodes.ways} outputs')
  if data.check is not None:
    data.check(config.sections['dataset'])
  if spec.check is not None:
    spec.check(config.sections['algorithm'])


def differing_fields(saved: Config, requested: Config) -> list[str]:
  """The settings, outside `RESUMABLE_FIELDS`, in which two resolved configs differ.

  `num_steps` may change on resume (to extend a run), except under a learning
  rate schedule, whose shape it sets.
  """
  resumable = RESUMABLE_FIELDS
  if saved.lr_schedule != 'constant' or requested.lr_schedule != 'constant':
    resumable = resumable - {'num_steps'}
  a, b = saved.flat(), requested.flat()
  return [name for name in dict.fromkeys([*a, *b])
          if name not in resumable and a.get(name) != b.get(name)]
