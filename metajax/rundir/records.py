"""What a run directory records: its settings (`config.json`, `flags.txt`) and results (`eval.json`)."""

import json
import os
from typing import Optional

from metajax import settings
from metajax.config import Config, differing_fields


class ConfigMismatchError(ValueError):
  """A workdir holds a run whose settings differ from the requested ones."""


def read_config(workdir: str) -> Optional[Config]:
  """The config saved in `workdir`, resolved, or None if it holds no run."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return Config.from_dict(json.load(f)).resolve()


def make_workdir(workdir: str, create: bool = True) -> None:
  """Creates `workdir` (and its parents) if needed; a clear error if it cannot be a run directory.

  With `create=False`, only refuses a file (checked before anything is built).

  Raises:
    ValueError: naming `workdir=`, for a file or a place that cannot be written.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'workdir={workdir}: is a file, not a folder; choose a folder (a new one '
                     'is created)')
  if not create:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'workdir={workdir}: cannot create it ({e.strerror}); choose a folder '
                     'you can write') from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ValueError(f'workdir={workdir}: cannot write there (read-only); choose a folder you '
                     'can write') from None


def check_workdir(config: Config, workdir: str) -> None:
  """Refuses a workdir that holds a run with other model/algorithm/data flags."""
  saved = read_config(workdir)
  diff = differing_fields(saved, config) if saved is not None else []
  if diff:
    details = '; '.join(f'--{name}={_flag_value(saved.get(name))} there, '
                        f'{_flag_value(config.get(name))} here' for name in diff)
    raise ConfigMismatchError(
        f'--workdir={workdir} holds a run with other settings ({details}). '
        'Resume it with its own flags, or choose a new --workdir.')


def _flag_value(value) -> str:
  return ','.join(map(str, value)) if isinstance(value, tuple) else str(value)


def write_config(config: Config, workdir: str) -> None:
  """`config.json` (every setting by section), and `flags.txt`: a flagfile that repeats the run.

  `flags.txt` holds the settings of the run's own parts only, each as a flag.
  """
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json())
  lines = [f'--{name}={settings.text(value)}' for name, value in config.flat().items()]
  with open(os.path.join(workdir, 'flags.txt'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


# What makes two evaluations the same protocol: a new record replaces an old
# one only where all of these agree.
PROTOCOL = ('split', 'source', 'ways', 'shots', 'query', 'inner_steps', 'num_tasks',
            'checkpoint_step')


def read_eval(workdir: str) -> list[dict]:
  """The records of `eval.json` ([] if there is none)."""
  path = os.path.join(workdir, 'eval.json')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def write_eval(workdir: str, records: list[dict], path: Optional[str] = None) -> str:
  """Adds `records` to `eval.json` (or to `path`), replacing only records of the same protocol.

  Every evaluation is kept: training's own and each later one (other ways,
  shots, inner steps, numbers of tasks, checkpoints). The file is replaced
  atomically.
  """
  protocol = lambda r: tuple(r.get(k) for k in PROTOCOL)
  new = {protocol(r) for r in records}
  path = os.path.join(workdir, 'eval.json') if path is None else path
  kept = []
  if os.path.exists(path):
    with open(path) as f:
      kept = [r for r in json.load(f) if protocol(r) not in new]
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(kept + list(records), f, indent=2)
  os.replace(tmp, path)
  return path
