"""The run directory: settings, results, the best checkpoint, and loading a trained run.

A run directory holds `config.json` (the resolved settings), `flags.txt` (the
same as a flagfile), `metrics.jsonl`, `tensorboard/`, `checkpoints/`, `best/`
(the best checkpoint on validation, with `--eval_every`) and `eval.json`.
`load_run` and `load_learner` need nothing else: no data, no flags.
"""

import contextlib
import json
import os
import socket
import time
from typing import Optional

from absl import logging
import jax
import numpy as np

from metajax import inference, run as run_lib, settings
from metajax.checkpoint import Checkpointer
from metajax.config import Config, differing_fields
from metajax.step import TrainState


class ConfigMismatchError(ValueError):
  """A workdir holds a run whose settings differ from the requested ones."""


class RunDirectoryBusyError(RuntimeError):
  """Another live process holds the run directory."""


LOCK = 'run.lock'


def _process_start(pid: int) -> Optional[str]:
  """When process `pid` started (Linux: /proc), to tell it from a later one of the same pid."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  if holder.get('host') != socket.gethostname():
    return True  # cannot be checked from here: assume it runs
  try:
    os.kill(int(holder['pid']), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  started = _process_start(int(holder['pid']))
  return started is None or holder.get('started') in (None, started)


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds `<workdir>/run.lock` (pid and host) while the block runs: one writer per run.

  A second process that enters while a live one holds it stops at once with
  `RunDirectoryBusyError` naming the holder. A lock left by a process that no
  longer runs (killed with SIGKILL, say) is stale and is taken over, so a
  killed run resumes. (Two processes that take over one stale lock at the same
  instant can still both enter; launching a killed run twice at once is rare.)
  """
  path = os.path.join(workdir, LOCK)
  mine = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.strftime('%c'),
          'started': _process_start(os.getpid())}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_lock(path)
      if holder is None:
        continue  # released meanwhile
      if holder and _alive(holder):
        raise RunDirectoryBusyError(
            f'workdir={workdir} is in use by process {holder.get("pid")} on '
            f'{holder.get("host")} (since {holder.get("since")}); wait for it to finish or '
            f'stop it (if that process is gone, delete {path})') from None
      logging.warning('%s: taking over the lock of process %s, which no longer runs',
                      workdir, holder.get('pid'))
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(mine, f)
    break
  try:
    yield
  finally:
    if _read_lock(path) == mine:  # release only our own lock
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _read_lock(path: str, patience_s: float = 1.0) -> Optional[dict]:
  """The lock's holder; {} if it stays unreadable; None if there is no lock.

  A lock is created empty and then written, so an unreadable one is read
  again for up to `patience_s` before it counts as stale.
  """
  deadline = time.monotonic() + patience_s
  while True:
    try:
      with open(path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      if time.monotonic() > deadline:
        return {}
      time.sleep(0.05)


def read_config(workdir: str) -> Optional[Config]:
  """The config saved in `workdir`, resolved, or None if it holds no run."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return Config.from_dict(json.load(f)).resolve()


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


def write_eval(workdir: str, records: list[dict]) -> str:
  """Adds `records` to `eval.json`, replacing only records of the same protocol.

  Every evaluation is kept: training's own and each later one (other ways,
  shots, inner steps, numbers of tasks, checkpoints). The file is replaced
  atomically.
  """
  protocol = lambda r: tuple(r.get(k) for k in PROTOCOL)
  new = {protocol(r) for r in records}
  kept = [r for r in read_eval(workdir) if protocol(r) not in new]
  path = os.path.join(workdir, 'eval.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(kept + list(records), f, indent=2)
  os.replace(tmp, path)
  return path


class BestKeeper:
  """Keeps the state with the best validation score in `<workdir>/best`.

  The score is the validation metric after the most inner steps evaluated;
  higher is better for accuracy, lower for MSE. `best/best.json` records it.
  """

  def __init__(self, workdir: str, metric: str):
    self.checkpointer = Checkpointer(workdir, max_to_keep=1, subdir='best')
    self.path = os.path.join(self.checkpointer.directory, 'best.json')
    self.sign = 1.0 if metric == 'accuracy' else -1.0
    self.best = None
    if os.path.exists(self.path) and self.checkpointer.latest_step() is not None:
      with open(self.path) as f:
        self.best = json.load(f)

  def offer(self, step: int, records: list[dict], state: TrainState) -> None:
    record = max(records, key=lambda r: r['inner_steps'])
    value = record['mean']
    if not np.isfinite(value):
      return
    if self.best is None or self.sign * value > self.sign * self.best['value']:
      self.checkpointer.save(step, state)
      self.checkpointer.wait()
      self.best = {'step': step, 'value': value, 'metric': record['metric'],
                   'inner_steps': record['inner_steps'], 'split': 'val'}
      if jax.process_index() == 0:
        with open(self.path, 'w') as f:
          json.dump(self.best, f)

  def restore(self, state: TrainState) -> Optional[TrainState]:
    if self.best is None:
      return None
    return self.checkpointer.restore(state, self.best['step'])

  def close(self):
    self.checkpointer.close()


def load_run(workdir: str, step: Optional[int] = None, prefer_best: bool = True,
             ) -> tuple[run_lib.Run, TrainState]:
  """(run, state) of a trained run, built without its data (`run.source` is None).

  Loads checkpoint `step` (one of `checkpoints/`, or the best-on-validation
  one's step); by default the best-on-validation checkpoint when the run kept
  one (`--eval_every`), else the latest.
  """
  config = read_config(workdir)
  if config is None:
    raise FileNotFoundError(f'workdir={workdir} holds no run (no config.json)')
  run = run_lib.build_run(config, data=False)
  state = run.init_state()
  if step is not None or prefer_best:
    if os.path.isdir(os.path.join(workdir, 'best')):
      best = BestKeeper(workdir, run.metric)
      restored = (best.restore(state)
                  if step is None or (best.best or {}).get('step') == step else None)
      best.close()
      if restored is not None:
        return run, restored
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'workdir={workdir} holds no checkpoint')
  checkpointer = Checkpointer(workdir, config.max_checkpoints)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f'workdir={workdir} holds no checkpoint')
  state = checkpointer.restore(state, step)
  checkpointer.close()
  return run, state


def load_learner(workdir: str, step: Optional[int] = None) -> inference.TrainedLearner:
  """The trained learner of a run directory (the best or latest checkpoint by default)."""
  run, state = load_run(workdir, step)
  return inference.TrainedLearner(run.config, run.learner, state.theta, int(state.step))
