"""absl flags for the experiment scripts, derived from the parts' declared settings.

Every setting that a run section, the episodes, an algorithm, a dataset or a
model declares (`metajax.settings`) becomes one flag of the same name; a name
that several parts declare is one flag. Flags default to "not given", so that
each part's own default applies (`metajax.config`). `--help` shows the run
and episode settings and those of the algorithm, dataset and model named on
the command line (or the defaults), with each default and limit;
`--helpfull` shows every flag. Scripts call `define_config_flags()` at import,
`focus_help()` before `app.run`, and `config_from_flags()` in `main`. The
library itself never reads flags; `flag_words` puts its errors in the
scripts' words.
"""

import re
import sys
from typing import Any, Optional

from absl import flags

from metajax import settings as settings_lib
from metajax.algorithms import ALGORITHMS
from metajax.config import Config, RunSettings
from metajax.data import DATASETS
from metajax.data.source import EpisodeSettings
from metajax.models import MODELS

PART_HELP = {
    'algorithm': '; '.join(f'{name}: {spec.summary}' for name, spec in ALGORITHMS.items()),
    'dataset': ' | '.join(DATASETS) + ' (folders:DIR, tfds:NAME); several, comma-separated, '
               'mix their episodes (each episode from one source)',
    'model': ' | '.join(f'{name}: {spec.summary}' for name, spec in MODELS.items())
             + ' (default: the dataset\'s first: mlp for sinusoid, conv4 for images)',
}
PART_DEFAULTS = {'algorithm': 'maml', 'dataset': 'sinusoid'}


def declarations() -> dict[str, list[tuple[str, type]]]:
  """{setting: [(owner, section class), ...]} over every registered part."""
  owners: dict[str, list[tuple[str, type]]] = {}
  parts = [('run', RunSettings), ('episodes', EpisodeSettings)]
  parts += [(f'--algorithm={n}', s.settings) for n, s in ALGORITHMS.items()]
  parts += [(f'--dataset={n}', s.settings) for n, s in DATASETS.items()]
  parts += [(f'--model={n}', s.settings) for n, s in MODELS.items()]
  for owner, cls in parts:
    for name in settings_lib.names(cls):
      owners.setdefault(name, []).append((owner, cls))
  return owners


def define_config_flags(flag_values=flags.FLAGS) -> None:
  """Defines one absl flag per declared setting (and --algorithm, --dataset, --model)."""
  for name in ('algorithm', 'dataset', 'model'):
    flags.DEFINE_string(name, None, PART_HELP[name] + (
        f' (default: {PART_DEFAULTS[name]})' if name in PART_DEFAULTS else ''),
                        flag_values=flag_values)
  for name, owners in declarations().items():
    owner, cls = owners[0]
    base = settings_lib.kind(cls, name)
    kinds = {settings_lib.kind(c, name) for _, c in owners}
    if len(kinds) > 1:
      raise TypeError(f'setting {name} is declared with types {kinds} by {owners}')
    helps = {settings_lib.field(c, name).metadata['help'] for _, c in owners}
    text = next(iter(helps)) if len(helps) == 1 else '; '.join(
        f'{o}: {settings_lib.field(c, name).metadata["help"]}' for o, c in owners)
    if base is tuple:
      flags.DEFINE_list(name, None, text, flag_values=flag_values)
    elif base is bool:
      flags.DEFINE_bool(name, None, text, flag_values=flag_values)
    elif base is int:
      flags.DEFINE_integer(name, None, text, flag_values=flag_values)
    elif base is float:
      flags.DEFINE_float(name, None, text, flag_values=flag_values)
    else:
      flags.DEFINE_string(name, None, text, flag_values=flag_values)


def _chosen(argv: list[str], flag_values) -> dict[str, str]:
  """--algorithm, --dataset, --model as given in `argv` (flagfiles read), without parsing it."""
  try:
    args = flag_values.read_flags_from_files(argv[1:], force_gnu=False)
  except Exception:  # pylint: disable=broad-except
    args = argv[1:]
  chosen = {}
  for arg in args:
    match = re.fullmatch(r'--?(algorithm|dataset|model)=(.*)', arg)
    if match:
      chosen[match.group(1)] = match.group(2)
  return chosen


def focus_help(argv: Optional[list[str]] = None, flag_values=flags.FLAGS) -> None:
  """Makes `--help` show the settings of the parts chosen in `argv` only.

  The run and episode settings and those of the algorithm, dataset and model
  named in `argv` (the defaults where none is) become key flags of the main
  module, each with its resolved default and limits in its help; `--helpfull`
  still lists every flag. Unknown choices leave the help as it is.
  """
  argv = sys.argv if argv is None else argv
  chosen = _chosen(argv, flag_values)
  try:
    config = Config(**chosen)
  except ValueError:
    return
  main = argv[0]  # absl files the main module's flags under the script's path
  for part in ('algorithm', 'dataset', 'model'):
    flag_values.register_key_flag_for_module(main, flag_values[part])
  for section in config.sections.values():
    for f in section.__dataclass_fields__.values():
      value = getattr(section, f.name)
      limits = settings_lib.limits(f)
      default = 'unset' if value is None else settings_lib.text(value)
      flag_values[f.name].help = (f'{f.metadata["help"]} [default: {default}'
                                  + (f'; {limits}' if limits else '') + ']')
      flag_values.register_key_flag_for_module(main, flag_values[f.name])


_NAMES = '|'.join(sorted(list(declarations()) + ['algorithm', 'dataset', 'model', 'workdir'],
                         key=len, reverse=True))
_ARGUMENT = re.compile(rf'(?<![-\w./=])({_NAMES})=')


def flag_words(error: Exception) -> str:
  """An error message with each `setting=value` of the library written `--setting=value`."""
  return _ARGUMENT.sub(r'--\1=', str(error))


def given_flags(flag_values=flags.FLAGS) -> dict[str, Any]:
  """The settings given on the command line or in a flagfile, by name."""
  names = ['algorithm', 'dataset', 'model', *declarations()]
  return {name: flag_values[name].value for name in names
          if flag_values[name].present or flag_values[name].value is not None}


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
  return Config(**{**given_flags(flag_values), **overrides}).validate()


__all__ = ['config_from_flags', 'config_from_flagfile', 'config_or_exit', 'declarations',
           'define_config_flags', 'flag_words', 'focus_help', 'given_flags']
