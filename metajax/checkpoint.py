"""Orbax checkpoints of the whole training state, saved atomically.

A checkpoint holds the `TrainState` (step, meta-parameters, optimizer state,
RNG key); the task samplers are pure functions of the seed and the step, so
the step is their whole state. A save is written to a temporary folder and
renamed when complete, so a run killed mid-save leaves the previous checkpoint
as the latest one.
"""

import errno
import os
import re
import shutil
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one run's `TrainState` under `<workdir>/<subdir>`.

  Saves are synchronous: a Conv4's state writes in milliseconds, and an error
  (a full disk) is raised by `save` itself, naming the step and the folder.

  Args:
    workdir: the run directory.
    max_to_keep: checkpoints kept.
    subdir: the folder under `workdir`.
    read_only: for evaluation and loading: nothing is created, cleaned or
      written; an incomplete checkpoint is ignored (listed in `incomplete`).
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, subdir: str = 'checkpoints',
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    # A run killed while saving leaves its incomplete checkpoint in a temporary
    # folder; the checkpoint before it is intact. A writer removes it (and the
    # loop says so); a reader leaves it (and says so).
    self.incomplete = _incomplete(self.directory)
    self.removed_incomplete = []
    if not read_only and self.incomplete and os.access(self.directory, os.W_OK):
      for name in os.listdir(self.directory):
        if TMP in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      self.removed_incomplete = self.incomplete
    self._manager = ocp.CheckpointManager(
        self.directory,
        # A reader's manager creates and cleans nothing (orbax's own read_only
        # mode would also say so in three warnings on every load).
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                             cleanup_tmp_directories=False,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    # A disk without room for the state fails here, before orbax writes a part of it
    # (its failure mid-write is noisy); one that fills up during the write, below.
    need = int(1.2 * sum(getattr(x, 'nbytes', 0) for x in jax.tree.leaves(state))) + (1 << 16)
    if shutil.disk_usage(self.directory).free < need:
      raise _save_error(self.directory, step, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                        self.latest_step())
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except (OSError, ValueError) as e:  # tensorstore raises ValueError('RESOURCE_EXHAUSTED...')
      if not isinstance(e, OSError) and 'os_error_code' not in str(e):
        raise
      for name in os.listdir(self.directory):  # free what the failed save wrote
        if name.startswith(f'{step}.') and TMP in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      raise _save_error(self.directory, step, e, self.latest_step()) from None

  def steps(self) -> list[int]:
    """The steps of the checkpoints kept, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    step = self.latest_step() if step is None else step
    kept = self.steps()
    if step not in kept:
      raise FileNotFoundError(f'step={step}: no checkpoint of that step in {self.directory} '
                              f'(kept: {", ".join(map(str, kept)) or "none"})')
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


TMP = '.orbax-checkpoint-tmp'


class WriteError(OSError):
  """A run's file could not be written; its message names the file, the cause and the fix."""

  def __str__(self) -> str:
    return self.strerror if len(self.args) > 1 else super().__str__()


def _incomplete(directory: str) -> list:
  """The steps of the temporary folders of saves that never finished."""
  if not os.path.isdir(directory):
    return []
  steps = [name.split('.', 1)[0] for name in sorted(os.listdir(directory)) if TMP in name]
  return [int(step) if step.isdigit() else step for step in steps]


def write_hint(number: Optional[int]) -> str:
  """What to do about a failed write in a run directory."""
  return ('free space there or choose another --workdir' if number == errno.ENOSPC
          else 'check that the folder is writable, or choose another --workdir')


def _save_error(directory: str, step: int, error: Exception,
                last: Optional[int]) -> 'WriteError':
  """An OSError naming the step, the folder, the cause and what to do."""
  text = str(error)
  number = getattr(error, 'errno', None)
  if number is None:
    found = re.search(r"os_error_code='?(\d+)", text)
    number = int(found.group(1)) if found else errno.EIO
  why = getattr(error, 'strerror', None) or os.strerror(number)
  hint = write_hint(number)
  kept = (f'the last complete checkpoint, step {last}, is kept' if last is not None
          else 'no checkpoint had been saved yet')
  return WriteError(number, f'saving the checkpoint of step {step} in {directory} failed ({why}): '
                 f'{hint}; {kept}')
