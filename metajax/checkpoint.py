"""Orbax checkpoints of the whole training state, saved atomically.

A checkpoint holds the `TrainState` (step, meta-parameters, optimizer state,
RNG key); the task samplers are pure functions of the seed and the step, so
the step is their whole state. A save is written to a temporary folder and
renamed when complete, so a run killed mid-save leaves the previous checkpoint
as the latest one.
"""

import errno
import os
import shutil
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one run's `TrainState` under `<workdir>/<subdir>`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, subdir: str = 'checkpoints'):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    # A run killed while saving leaves its incomplete checkpoint in a temporary
    # folder; the checkpoint before it is intact. Removed here, and said.
    self.removed_incomplete = []
    if os.path.isdir(self.directory) and os.access(self.directory, os.W_OK):
      for name in sorted(os.listdir(self.directory)):
        if '.orbax-checkpoint-tmp' in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
          step = name.split('.', 1)[0]
          self.removed_incomplete.append(int(step) if step.isdigit() else name)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except OSError as e:
      raise _save_error(self.directory, step, e) from e

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
    try:
      self._manager.wait_until_finished()
    except OSError as e:
      raise _save_error(self.directory, None, e) from e

  def close(self) -> None:
    self._manager.close()


def _save_error(directory: str, step: Optional[int], error: OSError) -> OSError:
  what = f'the checkpoint of step {step}' if step is not None else 'a checkpoint'
  why = error.strerror or str(error)
  hint = ('free space there or choose another --workdir' if error.errno == errno.ENOSPC
          else 'check that the folder is writable, or choose another --workdir')
  return OSError(error.errno, f'saving {what} in {directory} failed ({why}): {hint}; the last '
                 'complete checkpoint is kept')
