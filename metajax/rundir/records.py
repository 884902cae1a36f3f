"""What a run directory records: its settings (`config.json`, `flags.txt`) and results (`eval.json`)."""

import json
import os
from typing import Optional

from metajax import settings
from metajax.checkpoint import WriteError, write_hint
from metajax.config import Config, differing_fields
from metajax.data.source import ClassSplits

CLASSES = 'classes.json'
SPLITS = ('train', 'val', 'test')


class ConfigMismatchError(ValueError):
  """A workdir holds a run whose settings differ from the requested ones."""


class DataChangedError(ValueError):
  """The data's class split differs from the one a run recorded."""


def class_record(source) -> Optional[dict]:
  """{split: {'fingerprint', 'classes'}} of a class-based source (None: it has no classes)."""
  if not isinstance(source, ClassSplits):
    return None
  return {split: {'fingerprint': source.split_fingerprint(split),
                  'classes': list(source.class_names(split))} for split in SPLITS}


def read_classes(workdir: str) -> Optional[dict]:
  path = os.path.join(workdir, CLASSES)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_classes(workdir: str, record: Optional[dict]) -> None:
  """`classes.json`: the class names of each split and a fingerprint of their files."""
  if record is not None:
    write_text(os.path.join(workdir, CLASSES), json.dumps(record, indent=1))


def check_classes(workdir: str, record: Optional[dict], what_to_do: str) -> None:
  """Raises DataChangedError if `record` differs from the class split `workdir` recorded.

  The message names the classes added, removed and moved between splits (at
  most five of each), or says that the files changed under the same classes,
  then `what_to_do`.
  """
  saved = read_classes(workdir)
  if saved is None or record is None or all(
      saved[s]['fingerprint'] == record[s]['fingerprint'] for s in SPLITS):
    return
  old = {c: s for s in SPLITS for c in saved[s]['classes']}
  new = {c: s for s in SPLITS for c in record[s]['classes']}
  parts = []
  for label, names in (('added', sorted(set(new) - set(old))),
                       ('removed', sorted(set(old) - set(new)))):
    if names:
      parts.append(f'{len(names)} {"class" if len(names) == 1 else "classes"} {label} '
                   f'({", ".join(names[:5])}{", ..." if len(names) > 5 else ""})')
  moved = sorted(c for c in set(old) & set(new) if old[c] != new[c])
  if moved:
    parts.append(f'{len(moved)} moved between splits (' + ', '.join(
        f'{c}: {old[c]} -> {new[c]}' for c in moved[:5]) + (', ...)' if len(moved) > 5 else ')'))
  if not parts:
    changed = [s for s in SPLITS if saved[s]['fingerprint'] != record[s]['fingerprint']]
    parts.append(f'the same classes, but other files in the {" and ".join(changed)} '
                 f'{"split" if len(changed) == 1 else "splits"}')
  raise DataChangedError(f'the data differs from the class split recorded in '
                         f'{os.path.join(workdir, CLASSES)}: {"; ".join(parts)}. {what_to_do}')


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


def write_text(path: str, text: str) -> None:
  """Writes `path` atomically (a full disk leaves the old file, or none).

  Raises:
    WriteError: naming the file, the cause and what to do.
  """
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise WriteError(e.errno, f'writing {path} failed ({e.strerror or e}): '
                     f'{write_hint(e.errno)}') from None


def write_config(config: Config, workdir: str) -> None:
  """`config.json` (every setting by section), and `flags.txt`: a flagfile that repeats the run.

  `flags.txt` holds the settings of the run's own parts only, each as a flag.
  """
  write_text(os.path.join(workdir, 'config.json'), config.to_json())
  lines = [f'--{name}={settings.text(value)}' for name, value in config.flat().items()]
  write_text(os.path.join(workdir, 'flags.txt'), '\n'.join(lines) + '\n')


# What makes two evaluations the same protocol: a new record replaces an old
# one only where all of these agree.
PROTOCOL = ('split', 'source', 'ways', 'shots', 'query', 'inner_steps', 'num_tasks',
            'checkpoint_step', 'data')


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
  write_text(path, json.dumps(kept + list(records), indent=2))
  return path
