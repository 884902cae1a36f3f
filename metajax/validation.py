"""Validation of a `Config`: every bad setting is an error naming its flag and value.

Choices and capabilities come from the registries: the algorithm's settings
and choices (`metajax.algorithms.registry`), the dataset's task kind, models,
sources and class splits (`metajax.data.registry`).
"""

from metajax.algorithms import ALGORITHMS
from metajax.data import registry as data_registry
from metajax.data.registry import DATA_SETTINGS
from metajax.optimizers import INNER_OPTIMIZERS, meta_optimizer

ALGORITHM_SETTINGS = tuple(sorted({s for spec in ALGORITHMS.values() for s in spec.settings}))
LR_SCHEDULES = ('constant', 'cosine', 'warmup_cosine')
COMPUTE_DTYPES = ('float32', 'bfloat16')
BATCH_NORMS = ('transductive', 'support')
EPISODES = ('fixed', 'variable')
POSITIVE = ('shots', 'meta_batch_size', 'num_steps', 'checkpoint_every', 'log_every',
            'eval_tasks', 'val_tasks', 'max_checkpoints', 'num_processes', 'query', 'eval_query', 'cg_steps',
            'channels')


def fail(flag: str, value, why: str):
  """Raises `ValueError('--flag=value: why')` (strings quoted, lists comma-separated)."""
  if isinstance(value, (tuple, list)):
    text = ','.join(map(str, value))
  else:
    text = repr(value) if isinstance(value, str) else str(value)
  raise ValueError(f'--{flag}={text}: {why}')


def choose(flag: str, value, choices) -> None:
  if value not in choices:
    fail(flag, value, f'choose one of {", ".join(choices)}')


def check(config) -> None:
  """Raises ValueError naming the flag and value of the first bad setting of `config`."""
  choose('algorithm', config.algorithm, ALGORITHMS)
  try:
    data = data_registry.get(config.dataset)
  except ValueError as e:
    raise ValueError(f'--{e}') from None
  spec = ALGORITHMS[config.algorithm]
  for name in ALGORITHM_SETTINGS:
    if name not in spec.settings and getattr(config, name) is not None:
      uses = ', '.join(f'--{s}' for s in spec.settings) or 'none'
      fail(name, getattr(config, name),
           f'--algorithm={config.algorithm} does not use it (its settings: {uses})')
  if config.inner_optimizer is not None:
    choose('inner_optimizer', config.inner_optimizer, INNER_OPTIMIZERS)
  for name, choices in spec.choices.items():
    if getattr(config, name) is not None:
      choose(name, getattr(config, name), choices)
  for name in POSITIVE:
    if getattr(config, name) is not None and getattr(config, name) < 1:
      fail(name, getattr(config, name), 'must be a positive integer')
  _check_inner(config, spec)
  _check_run(config)
  _check_data(config, spec, data)
  meta_optimizer(config)  # raises for an unknown meta-optimizer


def _check_inner(config, spec) -> None:
  least = 0 if spec.defaults.get('inner_steps') == 0 else 1  # 0: a model-based learner
  if config.inner_steps is not None and config.inner_steps < least:
    fail('inner_steps', config.inner_steps,
         'must be >= 0' if least == 0 else 'must be a positive integer')
  for name in ('backprop_steps', 'msl_steps', 'first_order_steps'):
    if getattr(config, name) is not None and getattr(config, name) < 0:
      fail(name, getattr(config, name), 'must be >= 0')
  for name in ('inner_lr', 'imaml_lambda', 'meta_lr'):
    value = getattr(config, name)
    if value is not None and not value > 0:
      fail(name, value, 'must be > 0')
  if config.pretrain_classes is not None and config.pretrain_classes < 2:
    fail('pretrain_classes', config.pretrain_classes, 'must be >= 2')
  if config.eval_inner_steps is not None and (
      not config.eval_inner_steps or any(s < 0 for s in config.eval_inner_steps)):
    fail('eval_inner_steps', config.eval_inner_steps,
         'must be a non-empty list of integers >= 0')


def _check_run(config) -> None:
  if not 0 <= config.process_id < config.num_processes:
    fail('process_id', config.process_id, f'must be in [0, --num_processes={config.num_processes})')
  if config.num_processes > 1 and not config.coordinator_address:
    fail('num_processes', config.num_processes, 'a multi-process run needs --coordinator_address')
  choose('compute_dtype', config.compute_dtype, COMPUTE_DTYPES)
  choose('lr_schedule', config.lr_schedule, LR_SCHEDULES)
  if not 0 <= config.warmup_steps < config.num_steps:
    fail('warmup_steps', config.warmup_steps, f'must be in [0, --num_steps={config.num_steps})')
  if not 0 <= config.min_meta_lr <= config.meta_lr:
    fail('min_meta_lr', config.min_meta_lr, f'must be in [0, --meta_lr={config.meta_lr}]')
  if config.task_chunk < 0:
    fail('task_chunk', config.task_chunk, 'must be >= 0 (0: chosen for the backend)')
  if config.task_chunk and config.meta_batch_size % config.task_chunk:
    fail('task_chunk', config.task_chunk,
         f'--meta_batch_size={config.meta_batch_size} is not a multiple of it')
  if config.eval_every < 0:
    fail('eval_every', config.eval_every, 'must be >= 0 (0: only at the end)')
  if not config.hidden or any(h < 1 for h in config.hidden):
    fail('hidden', config.hidden, 'must be a non-empty list of positive widths')


def _check_episodes(config, spec, data) -> None:
  choose('episodes', config.episodes, EPISODES)
  if config.episodes == 'fixed':
    return
  if data.task != 'classification':
    fail('episodes', config.episodes, f'--dataset={config.dataset} has no classes')
  if not spec.any_ways:
    any_ways = ', '.join(name for name, s in ALGORITHMS.items() if s.any_ways)
    fail('episodes', config.episodes,
         f'episodes of varying ways need a learner whose classes come from the support set '
         f'({any_ways}); {config.algorithm} has a fixed-size head')
  if config.max_ways < 5:
    fail('max_ways', config.max_ways, 'Meta-Dataset episodes have at least 5 ways')
  if config.max_support < config.max_ways:
    fail('max_support', config.max_support,
         f'must be at least --max_ways={config.max_ways} (a support image per class)')


def _check_data(config, spec, data) -> None:
  if data.task not in spec.tasks:
    fail('algorithm', config.algorithm,
         f'{config.algorithm} handles {" and ".join(spec.tasks)} tasks; '
         f'--dataset={config.dataset} has {data.task} tasks')
  choose('model', config.model_name, data.models)
  choose('batch_norm', config.batch_norm, BATCH_NORMS)
  _check_episodes(config, spec, data)
  for name in DATA_SETTINGS:
    value = getattr(config, name)
    if value not in (None, False) and name not in data.settings:
      fail(name, value, f'--dataset={config.dataset} does not use it')
  if config.image_size is not None and config.image_size < 8:
    fail('image_size', config.image_size, 'must be at least 8 pixels')
  if config.image_channels is not None and config.image_channels not in (1, 3):
    fail('image_channels', config.image_channels, 'choose 1 (grayscale) or 3 (RGB)')
  if config.split_fractions is not None and (
      len(config.split_fractions) != 3 or min(config.split_fractions) <= 0):
    fail('split_fractions', config.split_fractions,
         'give three positive shares of the classes: train, val, test')
  if config.batch_norm != 'transductive' and config.model_name == 'mlp':
    fail('batch_norm', config.batch_norm, '--model=mlp has no batch norm')
  choose('data_source', config.data_source, data.sources)
  if data.class_splits and config.split is not None:
    choose('split', config.split, data.class_splits)
  elif config.split is not None and not data.class_splits:
    fail('split', config.split, f'--dataset={config.dataset} has no class splits to choose')
  if data.task == 'classification':
    for name in ('ways', 'train_ways'):
      if getattr(config, name) is not None and getattr(config, name) < 2:
        fail(name, getattr(config, name), 'a classification task needs at least 2 classes')
  if data.check is not None:
    data.check(config)
  if config.num_train_ways != config.num_ways and not spec.any_ways:
    any_ways = ' and '.join(name for name, s in ALGORITHMS.items() if s.any_ways)
    fail('train_ways', config.train_ways,
         f'only {any_ways} can train with other ways than they test (--ways={config.num_ways}): '
         f'{config.algorithm} has an {config.num_ways}-way head')
