"""The best checkpoint on validation, kept in `<workdir>/best`."""

import json
import os
from typing import Optional

import jax
import numpy as np

from metajax.checkpoint import Checkpointer
from metajax.step import TrainState


class BestKeeper:
  """Keeps the state with the best validation score in `<workdir>/best`.

  The score is the validation metric after the most inner steps evaluated;
  higher is better for accuracy, lower for MSE. `best/best.json` records it.
  """

  def __init__(self, workdir: str, metric: str, read_only: bool = False):
    self.checkpointer = Checkpointer(workdir, max_to_keep=1, subdir='best', read_only=read_only)
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
