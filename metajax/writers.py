"""Metrics to JSON lines and TensorBoard event files in the run directory."""

import json
import os

import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` to `metrics.jsonl` and TensorBoard."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    _truncate_after(self.path, resume_step)
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict, split: str = 'train') -> None:
    row = {'step': int(step), 'split': split}
    row.update({k: float(np.asarray(v)) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for name, value in row.items():
      if name not in ('step', 'split'):
        self._tb.add_scalar(f'{split}/{name}', value, step)

  def scalars(self, step: int, values: dict, split: str) -> None:
    """`values` to TensorBoard only, as `split/name` (figures that differ between
    two runs of the same settings, such as steps/s, stay out of `metrics.jsonl`)."""
    for name, value in values.items():
      self._tb.add_scalar(f'{split}/{name}', float(np.asarray(value)), int(step))

  def last(self, name: str, default=None):
    """The last value of `name` in `metrics.jsonl` (`default`: none there)."""
    value = default
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          if line.strip():
            value = json.loads(line).get(name, value)
    return value

  def close(self) -> None:
    self._tb.close()


def _truncate_after(path: str, step: int) -> None:
  """Drops rows logged after `step`: a resumed run logs those steps again."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  kept = [line for line in rows if json.loads(line)['step'] <= step]
  if len(kept) != len(rows):
    with open(path, 'w') as f:
      f.writelines(kept)
