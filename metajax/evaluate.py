"""Held-out evaluation: adapt on each task's support set, score its query set.

Reports, for each number of inner steps, the mean of a per-task metric (MSE
for regression, accuracy for classification) over the tasks and its 95%
interval, 1.96 * std / sqrt(n).
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metajax.learner import MetaLearner
from metajax.types import Array, Params, PRNGKey, Task


def mean_ci95(values) -> tuple[float, float]:
  """Mean and half-width of the 95% normal interval, 1.96 * std / sqrt(n)."""
  values = np.asarray(values, dtype=np.float64)
  if values.size < 2:
    return float(values.mean()), float('nan')
  return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _per_task(learner: MetaLearner, metric_fn, num_steps: int, theta: Params,
              tasks: Task, keys: PRNGKey) -> Array:

  def one(task, key):
    predictions = learner.predict(theta, task.support, task.query.x, key,
                                  num_steps)
    return metric_fn(predictions, task.query.y)

  return jax.vmap(one)(tasks, keys)


def per_task_metric(learner: MetaLearner, metric_fn: Callable, theta: Params,
                    tasks: Task, rng: PRNGKey, num_steps: int,
                    chunk_size: int = 1000) -> np.ndarray:
  """The metric of every task after `num_steps` inner steps, shape [num_tasks]."""
  num_tasks = jax.tree.leaves(tasks)[0].shape[0]
  keys = jax.random.split(rng, num_tasks)
  out = []
  for start in range(0, num_tasks, chunk_size):
    chunk = jax.tree.map(lambda v: v[start:start + chunk_size], tasks)
    out.append(np.asarray(_per_task(learner, metric_fn, num_steps, theta,
                                    chunk, keys[start:start + chunk_size])))
  return np.concatenate(out)


def evaluate(learner: MetaLearner, metric_fn: Callable, metric: str,
             theta: Params, tasks: Task, rng: PRNGKey,
             inner_steps: Sequence[int]) -> list[dict]:
  """One record per inner-step count: metric, mean, ci95, num_tasks, inner_steps."""
  records = []
  for steps in inner_steps:
    if steps == 0 and not learner.adapts:
      continue
    values = per_task_metric(learner, metric_fn, theta, tasks, rng, steps)
    mean, ci95 = mean_ci95(values)
    records.append({'metric': metric, 'mean': mean, 'ci95': ci95,
                    'num_tasks': int(values.size), 'inner_steps': int(steps),
                    'num_nonfinite': int(np.sum(~np.isfinite(values)))})
  return records


def format_records(name: str, records: list[dict]) -> str:
  cells = []
  for r in records:
    cell = f'{r["inner_steps"]:>2} steps: {r["mean"]:.4f} +- {r["ci95"]:.4f}'
    if r.get('num_nonfinite'):
      cell += f' (diverged on {r["num_nonfinite"]}/{r["num_tasks"]} tasks)'
    cells.append(cell)
  return f'{name:<11}' + '   '.join(cells)
