"""absl flags for the experiment scripts, one per `Config` field.

The flags are generated from the `Config` dataclass, so a field and its flag
never drift apart; algorithm and dataset choices, and the algorithms' own
defaults, come from the registries. Scripts call `define_config_flags()` at
import and `config_from_flags()` in `main`. The library itself never reads
flags; `flag_words` puts its errors in the scripts' words.
"""

import dataclasses
import re
import typing

from absl import flags

from metajax.algorithms import ALGORITHMS
from metajax.config import Config
from metajax.data import DATASETS
from metajax.validation import ALGORITHM_SETTINGS

HELP = {
    'algorithm': '; '.join(f'{name}: {spec.summary}' for name, spec in ALGORITHMS.items()),
    'dataset': ' | '.join(name + (':ARG' if spec.with_argument else '')
                          for name, spec in DATASETS.items()) + ' (folders:DIR, tfds:NAME); '
               'several, comma-separated, mix their episodes (each episode from one source)',
    'ways': 'classes per task (N); unset for regression',
    'shots': 'support examples per class (K)',
    'query': 'query examples per class (default: the dataset\'s: 15 for images, = shots for '
             'sinusoid)',
    'inner_steps': 'inner-loop steps during meta-training',
    'inner_lr': 'inner-loop learning rate (Meta-SGD: its initial value)',
    'inner_optimizer': 'inner-loop optimizer, differentiated through: sgd | momentum | adam',
    'meta_batch_size': 'tasks per meta-step (finetune: images per pre-training mini-batch)',
    'meta_lr': 'meta-optimizer learning rate',
    'meta_optimizer': 'any optax optimizer that takes a learning_rate (adam, sgd, adamw, ...)',
    'num_steps': 'meta-steps to train (raise it to extend a finished run)',
    'seed': 'seed of initialisation and training tasks',
    'hidden': 'hidden widths of the MLP',
    'remat': 'rematerialise inner steps in the backward pass (less memory)',
    'backprop_steps': ', '.join(n for n, s in ALGORITHMS.items() if s.truncatable)
                      + ': backpropagate through only the last k inner steps, the earlier ones '
                      'first-order (default: all)',
    'zero_head': ', '.join(n for n, s in ALGORITHMS.items() if 'zero_head' in s.settings)
                 + ': every inner loop starts from a zero linear head, the "zeroing trick" of '
                 'Kao et al. (ICLR 2022); the head is then not meta-learned',
    'imaml_lambda': 'iMAML: strength lambda of the proximal term lambda/2 ||phi - theta||^2',
    'cg_steps': 'iMAML: conjugate-gradient iterations for the implicit meta-gradient',
    'predictor_head': 'predictor: how a query is scored against the predicted class weights: '
                      'cosine (times a learned scale) | dot | euclidean',
    'rotations': 'Omniglot: rotations by 90/180/270 degrees as new classes (default: on for vinyals)',
    'finetune_head': 'finetune: the head fitted on each test episode: linear (Baseline) | '
                     'cosine (Baseline++, also in pre-training)',
    'pretrain_classes': 'finetune: classes of the pre-training head (default: every class '
                        'of the training split, from the data)',
    'lr_schedule': 'constant | cosine: cosine decay from --meta_lr to --min_meta_lr at '
                   '--num_steps (MAML++) | warmup_cosine: linear warm-up over --warmup_steps, '
                   'then the same decay (optax)',
    'min_meta_lr': 'the meta learning rate at --num_steps under a cosine --lr_schedule',
    'msl_steps': 'mamlpp: the multi-step loss (query losses after every inner step) anneals '
                 'to the last step over N meta-steps (0: the last step only)',
    'first_order_steps': 'mamlpp: first-order meta-gradients for the first N meta-steps, '
                         'then second order (0: second order throughout)',
    'per_step_bn': 'mamlpp: a batch-norm scale and bias per inner step, meta-learned',
    'learn_inner_lr': 'mamlpp: meta-learn one inner rate per parameter tensor and inner step '
                      '(from --inner_lr)',
    'warmup_steps': 'warm-up steps of --lr_schedule=warmup_cosine',
    'compute_dtype': 'float32 | bfloat16: dtype of the model and the inner loop; '
                     'meta-parameters and the meta-optimizer stay float32',
    'coordinator_address': 'multi-process runs: host:port of process 0 for '
                           'jax.distributed.initialize, or auto (TPU pods, SLURM)',
    'num_processes': 'multi-process runs: number of processes',
    'process_id': 'multi-process runs: index of this process',
    'mesh_shape': 'devices per axis of the device mesh (tasks[,model]); default: every device '
                  'on the tasks axis, which shards the meta-batch',
    'task_chunk': 'tasks vmapped together; a scan over chunks adds up their meta-gradients, '
                  'so memory holds one chunk (0: auto, one task per device for image models '
                  'on a CPU, the whole meta-batch otherwise)',
    'eval_every': 'evaluate on validation tasks every N meta-steps (0: never)',
    'checkpoint_every': 'save a checkpoint every N meta-steps',
    'log_every': 'log training metrics every N meta-steps',
    'max_checkpoints': 'checkpoints kept in the workdir',
    'eval_tasks': 'held-out tasks in each evaluation',
    'val_tasks': 'validation tasks in each --eval_every validation (default: --eval_tasks)',
    'eval_inner_steps': 'inner-step counts to evaluate after (default: the algorithm\'s, else 0,1,10)',
    'eval_query': 'query examples per class in evaluation tasks (default: 100 points for '
                  'sinusoid, --query otherwise)',
    'episodes': 'fixed: N-way K-shot episodes (--ways, --shots, --query) | variable: '
                'Meta-Dataset episodes (Triantafillou et al. 2020): 5 to --max_ways ways, '
                'imbalanced shots, a support set of at most --max_support, padded into a few '
                'shapes (protonet, predictor, finetune)',
    'max_ways': '--episodes=variable: the most ways (Meta-Dataset: 50)',
    'max_support': '--episodes=variable: the largest support set (Meta-Dataset: 500)',
    'image_size': 'folders, tfds: side of the square images (default: as found: 84, or 28 '
                  'when every image is grayscale)',
    'image_channels': 'folders, tfds: 1 (grayscale) or 3 (RGB) (default: as found)',
    'split_fractions': 'folders: train,val,test shares of the classes when the folder has no '
                       'splits.json (default: 0.6,0.2,0.2, from a fixed seed)',
    'skip_unreadable': 'folders: leave out files that Pillow cannot read (default: an error '
                       'naming the first one)',
    'data_dir': 'folders: the folder of class folders (data_dir/<class>/<image>); Omniglot: folder of the official zips or their extracted folders (default: '
                '$METAJAX_OMNIGLOT_DIR, else ~/.cache/metajax/omniglot, downloaded if missing); '
                'miniImageNet: folder of the split CSVs + images/ or the pickle caches '
                '(default: $METAJAX_MINIIMAGENET_DIR, else ~/.cache/metajax/miniimagenet)',
    'data_source': 'files: the official Omniglot zips or folders | tfds: '
                   'tfds.data_source("omniglot") in --data_dir (tfds\' folder)',
    'split': 'class split (default: the dataset\'s first). tfds:cifar100: cifar_fs (CIFAR-FS) | '
             'fc100 (FC100) | random; other tfds datasets: random; '
             'Omniglot: vinyals (1100/100/423 characters, rotations) | lake '
             '(background / evaluation)',
    'train_ways': 'ways of training episodes, e.g. 60 for ProtoNets (default: --ways)',
    'channels': 'filters per block of Conv4 (default: 64 for Omniglot, 32 for miniImageNet)',
    'model': 'mlp | conv4 | resnet12 (default: mlp for sinusoid, conv4 for images)',
    'batch_norm': 'transductive: every batch (support set, query set) is normalised with its own '
                  'statistics, as in the MAML paper | support: a task\'s query inputs are '
                  'normalised with its support set\'s statistics, so no query example sees '
                  'another (conv4, resnet12)',
    'augment': 'random 8-pixel-padded crops and horizontal flips of miniImageNet training '
               'episodes; random 2-pixel shifts of Omniglot pre-training images (finetune)',
}


def algorithm_defaults(setting: str) -> str:
  """'(default: maml 0.01, omniglot 0.4; reptile 0.02; ...)' from the registry."""
  parts = []
  for name, spec in ALGORITHMS.items():
    if setting in spec.settings or setting in spec.defaults:
      value = spec.defaults.get(setting)
      text = f'{name} {_text(value)}' + ''.join(
          f', {dataset} {_text(values[setting])}'
          for dataset, values in spec.dataset_defaults.items() if setting in values)
      parts.append(text)
  return f' (default: the algorithm\'s: {"; ".join(parts)})' if parts else ''


def _text(value) -> str:
  return ','.join(map(str, value)) if isinstance(value, tuple) else str(value)


def define_config_flags(flag_values=flags.FLAGS) -> None:
  """Defines one absl flag per `Config` field, with the field's default."""
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    name, default, hint = field.name, field.default, hints[field.name]
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint
    help_text = HELP.get(name, name)
    if name in ALGORITHM_SETTINGS:
      help_text += algorithm_defaults(name)
    if typing.get_origin(base) is tuple:
      flags.DEFINE_list(name, None if default is None else [str(v) for v in default], help_text,
                        flag_values=flag_values)
    elif base is bool:
      flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif base is int:
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif base is float:
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    else:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


_NAMES = '|'.join(sorted([f.name for f in dataclasses.fields(Config)] + ['workdir'], key=len,
                         reverse=True))
_ARGUMENT = re.compile(rf'(?<![-\w./=])({_NAMES})=')


def flag_words(error: Exception) -> str:
  """An error message with each `setting=value` of the library written `--setting=value`."""
  return _ARGUMENT.sub(r'--\1=', str(error))


def config_or_exit(flag_values=flags.FLAGS) -> Config:
  """`config_from_flags`, exiting with `error: --flag=value: why` on a bad setting."""
  try:
    return config_from_flags(flag_values)
  except ValueError as e:
    raise SystemExit(f'error: {flag_words(e)}') from None


def config_from_flagfile(path: str, *args: str) -> Config:
  """A validated `Config` from a preset flagfile and further `--flag=value` args."""
  values = flags.FlagValues()
  define_config_flags(values)
  values(['preset', f'--flagfile={path}', *args])
  return config_from_flags(values)


def config_from_flags(flag_values=flags.FLAGS, **overrides) -> Config:
  """A validated `Config` from the parsed flags; bad values raise ValueError."""
  values = {}
  for field in dataclasses.fields(Config):
    value = flag_values[field.name].value
    if isinstance(value, list):
      kind = float if field.name == 'split_fractions' else int
      try:
        value = tuple(kind(v) for v in value)
      except ValueError:
        raise ValueError(f'--{field.name}={",".join(value)}: expected comma-separated '
                         f'{"numbers" if kind is float else "integers"}') from None
    values[field.name] = value
  values.update(overrides)
  return Config(**values).validate()
