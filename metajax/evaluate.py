"""Held-out evaluation: adapt on each task's support set, score its query set.

Reports, for each number of inner steps, the mean of a per-task metric (MSE
for regression, accuracy for classification) over the tasks and its 95%
interval, 1.96 * std / sqrt(n).
"""

import functools
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metajax import losses
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
    predictions = learner.predict(theta, task.support, task.query.x, key, num_steps,
                                  task.query.mask)
    return losses.masked_mean(metric_fn, predictions, task.query.y, task.query.mask)

  return jax.vmap(one)(tasks, keys)


def per_task_metric(learner: MetaLearner, metric_fn: Callable, theta: Params,
                    task_batches: Iterable[Task], rng: PRNGKey,
                    num_steps: int) -> np.ndarray:
  """The metric of every task after `num_steps` inner steps, shape [num_tasks].

  `task_batches` yields batches of tasks (chunks bound the memory in use);
  task i gets the key `fold_in(rng, i)`.
  """
  out, seen = [], 0
  for tasks in task_batches:
    n = jax.tree.leaves(tasks)[0].shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(seen, seen + n))
    out.append(np.asarray(_per_task(learner, metric_fn, num_steps, theta, tasks, keys)))
    seen += n
  return np.concatenate(out)


def evaluate(learner: MetaLearner, metric_fn: Callable, metric: str,
             theta: Params, task_batches: Callable[[], Iterable[Task]], rng: PRNGKey,
             inner_steps: Sequence[int]) -> list[dict]:
  """One record per inner-step count: metric, mean, ci95, num_tasks, inner_steps.

  `task_batches()` gives a fresh iterable over the same held-out tasks for
  each inner-step count. A learner with no inner loop (`adapts=False`) gets
  one record, inner_steps 0.
  """
  records = []
  for steps in (inner_steps if learner.adapts else (0,)):
    values = per_task_metric(learner, metric_fn, theta, task_batches(), rng, steps)
    mean, ci95 = mean_ci95(values)
    records.append({'metric': metric, 'mean': mean, 'ci95': ci95,
                    'num_tasks': int(values.size), 'inner_steps': int(steps),
                    'num_nonfinite': int(np.sum(~np.isfinite(values)))})
  return records


def format_records(name: str, records: list[dict]) -> str:
  """A line per source (one for a single-source run): `name`, then each inner-step count.

  Accuracy is in percent, other metrics (MSE) as they are, each with its 95%
  interval. A source evaluated only without inner steps (ProtoNets, the
  predictor) shows its metric's name instead of "0 steps", which would read
  as untrained.
  """
  lines = []
  for source in dict.fromkeys(r.get('source') for r in records):
    mine = [r for r in records if r.get('source') == source]
    no_steps = all(r['inner_steps'] == 0 for r in mine)
    cells = []
    for r in mine:
      n = r['inner_steps']
      what = (r.get('metric', 'result') + ':' if no_steps
              else f'{n:>2} {"step: " if n == 1 else "steps:"}')
      if r.get('metric') == 'accuracy':
        cell = f'{what} {100 * r["mean"]:.2f} +- {100 * r["ci95"]:.2f} %'
      else:
        cell = f'{what} {r["mean"]:.4f} +- {r["ci95"]:.4f}'
      if r.get('num_nonfinite'):
        cell += f' (diverged on {r["num_nonfinite"]}/{r["num_tasks"]} tasks)'
      cells.append(cell)
    label = name if source is None else f'{name} [{source}]'
    lines.append(f'{label:<10} ' + '   '.join(cells))
  return '\n'.join(lines)
