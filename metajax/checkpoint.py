"""Orbax checkpoints of the whole training state, saved atomically.

A checkpoint holds the `TrainState` (step, meta-parameters, optimizer state,
RNG key); the task samplers are pure functions of the seed and the step, so
the step is their whole state. A save is written to a temporary folder and
renamed when complete, so a run killed mid-save leaves the previous checkpoint
as the latest one.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores one run's `TrainState` under `<workdir>/<subdir>`."""

  def __init__(self, workdir: str, max_to_keep: int = 3, subdir: str = 'checkpoints'):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

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
