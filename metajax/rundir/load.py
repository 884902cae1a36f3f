"""Loading a trained run from its directory alone: no data, no flags."""

import os
from typing import Optional

from metajax import inference, progress, run as run_lib
from metajax.checkpoint import Checkpointer
from metajax.rundir.best import BestKeeper
from metajax.rundir.records import read_config
from metajax.step import TrainState


def locate(path: str, step: Optional[int] = None) -> tuple[str, Optional[int]]:
  """(run directory, step) of a run directory, a checkpoint in it, or any file in it.

  `runs/a`, `runs/a/config.json` -> ('runs/a', step); `runs/a/checkpoints/200`
  or `runs/a/best/300` (or a file inside them) -> ('runs/a', 200 or 300).

  Raises:
    FileNotFoundError: naming `path`, for one that is missing or not in a run directory.
    ValueError: a `step` other than that of the checkpoint `path` names.
  """
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(full):
    raise FileNotFoundError(f'workdir={path}: no such file or folder')
  folder, found = full if os.path.isdir(full) else os.path.dirname(full), None
  is_run = lambda f: all(os.path.isfile(os.path.join(f, n)) for n in ('config.json', 'flags.txt'))
  for _ in range(8):  # a checkpoint's files lie a few folders below the run
    if is_run(folder):
      break
    parent, name = os.path.split(folder)
    if name.isdigit() and os.path.basename(parent) in ('checkpoints', 'best'):
      found = int(name)
    folder = parent
  if not is_run(folder):
    raise FileNotFoundError(f'workdir={path} holds no run (no config.json in it or above it)')
  if found is not None and step is not None and step != found:
    raise ValueError(f'step={step}: workdir={path} is the checkpoint of step {found}')
  return folder, found if found is not None else step


def load_run(workdir: str, step: Optional[int] = None, prefer_best: bool = True,
             ) -> tuple[run_lib.Run, TrainState]:
  """(run, state) of a trained run, built without its data (`run.source` is None).

  `workdir` is a run directory, a checkpoint in it or any file in it
  (`locate`). Loads checkpoint `step` (one of `checkpoints/`, or the
  best-on-validation one's step); by default the best-on-validation
  checkpoint when the run kept one (`--eval_every`), else the latest.
  """
  if os.path.exists(workdir):
    workdir, step = locate(workdir, step)
  config = read_config(workdir)
  if config is None:
    raise FileNotFoundError(f'workdir={workdir} holds no run (no config.json)')
  run = run_lib.build_run(config, data=False)
  state = run.init_state()
  if step is not None or prefer_best:
    if os.path.isdir(os.path.join(workdir, 'best')):
      best = BestKeeper(workdir, run.metric, read_only=True)
      restored = (best.restore(state)
                  if step is None or (best.best or {}).get('step') == step else None)
      best.close()
      if restored is not None:
        return run, restored
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'workdir={workdir} holds no checkpoint')
  checkpointer = Checkpointer(workdir, config.max_checkpoints, read_only=True)
  if checkpointer.incomplete:
    progress.say(f'{workdir}: ignoring an incomplete checkpoint (step '
                 f'{", ".join(map(str, checkpointer.incomplete))}) left by a run stopped while '
                 'saving it; the next training run in this folder removes it')
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f'workdir={workdir} holds no checkpoint')
  state = checkpointer.restore(state, step)
  checkpointer.close()
  return run, state


def load_learner(workdir: str, step: Optional[int] = None) -> inference.TrainedLearner:
  """The trained learner of a run directory (the best or latest checkpoint by default).

  `workdir` may also be a checkpoint folder of a run (`runs/a/checkpoints/200`)
  or any file in the run directory.
  """
  run, state = load_run(workdir, step)
  return inference.TrainedLearner(run.config, run.learner, state.theta, int(state.step))
