"""The small parts a training loop is assembled from: a clock, the step driver and hooks.

`steps(...)` runs meta-steps, each shape of batch compiled ahead of time, and
yields `(done, state, metrics)` after each; the training loop
(`metajax.loop`), `experiments/benchmark.py` and `experiments/second_order.py`
drive it, each with the hooks it needs. A hook is a callable
`hook(done, state, metrics)` called after every step (with `close()` if it
holds resources): `LogMetrics`, `Validate`, `SaveCheckpoints`.
"""

import contextlib
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp

from metajax.step import TrainState, step_key


class Clock:
  """Seconds of compilation, of training and of evaluation in one call of a loop.

  `time_s()` is the run's training time so far (compilation included,
  evaluation not), continued from `earlier_s`, a resumed run's last record;
  `train_s()` counts meta-steps only (from the first compiled step, later
  compilations and evaluation excluded), so that rates count steps.
  """

  def __init__(self, earlier_s: float = 0.0):
    self.earlier_s, self.started = earlier_s, time.perf_counter()
    self.compile_s = self.eval_s = self.late_compile_s = 0.0
    self.compiles, self.training_since = 0, None

  @contextlib.contextmanager
  def compiling(self):
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    self.compile_s += seconds
    self.compiles += 1
    if self.training_since is not None:
      self.late_compile_s += seconds

  @contextlib.contextmanager
  def evaluating(self):
    start = time.perf_counter()
    yield
    self.eval_s += time.perf_counter() - start

  def begin_training(self) -> None:
    if self.training_since is None:
      self.training_since = time.perf_counter()

  def time_s(self) -> float:
    return self.earlier_s + time.perf_counter() - self.started - self.eval_s

  def train_s(self) -> float:
    if self.training_since is None:
      return 0.0
    return time.perf_counter() - self.training_since - self.eval_s - self.late_compile_s


def steps(step_fn, state: TrainState, batches: Iterable[Any], start: int, stop: int, *,
          place: Optional[Callable[[int, Any, Any], tuple[Any, Any]]] = None,
          clock: Optional[Clock] = None,
          on_compile: Optional[Callable[[Any, int], None]] = None,
          on_compiled: Optional[Callable[[float], None]] = None,
          compiled: Optional[dict] = None) -> Iterator[tuple[int, TrainState, Any]]:
  """Runs meta-steps start..stop-1 of `batches`; yields (steps done, state, metrics) after each.

  Args:
    step_fn: the jitted meta-step `(state, batch, key) -> (state, metrics)`.
    state: the state before step `start`.
    batches: the batches of steps start, start + 1, ...
    start, stop: the steps to run.
    place: `(step, batch, key) -> (batch, key)` on the devices (default: as they are).
    clock: times compilation (each shape of batch compiles once, ahead of time).
    on_compile: `(batch, shapes compiled so far)` before each compilation.
    on_compiled: `(seconds)` after each.
    compiled: the steps compiled so far, by batch shape (kept across calls if given).
  """
  clock = clock or Clock()
  compiled = {} if compiled is None else compiled
  for step, batch in zip(range(start, stop), batches):
    key = step_key(state.rng, step)
    if place is not None:
      batch, key = place(step, batch, key)
    shape = tuple(v.shape for v in jax.tree.leaves(batch))
    if shape not in compiled:
      if on_compile is not None:
        on_compile(batch, len(compiled))
      before = clock.compile_s
      with clock.compiling():
        compiled[shape] = step_fn.lower(state, batch, key).compile()
      if on_compiled is not None:
        on_compiled(clock.compile_s - before)
      clock.begin_training()
    state, metrics = compiled[shape](state, batch, key)
    yield step + 1, state, metrics


def due(done: int, every: int, last: int) -> bool:
  """Whether step `done` is a multiple of `every` or the last step."""
  return done % every == 0 or done == last


class LogMetrics:
  """Every `every` steps and at the last: the window's mean metrics to `writer` and `progress`.

  Each row says how many steps it averages (`steps_averaged`): fewer than
  `every` in the first row after a resume between two log steps.
  """

  def __init__(self, every: int, last: int, writer, clock: Clock, check=None, progress=None,
               learning_rate=None, unconverged=None):
    self.every, self.last, self.writer, self.clock = every, last, writer, clock
    self.check, self.progress, self.window = check, progress, []
    # `unconverged(step, fraction of tasks, mean residual)`: called for each step of
    # the window whose per-task solves (`solver_unconverged`) did not all converge.
    self.unconverged = unconverged
    # TensorBoard also gets the meta learning rate (a float or an optax schedule of
    # the step) and the steps/s of each window.
    self.learning_rate, self.window_start = learning_rate, None

  def __call__(self, done: int, state: TrainState, metrics) -> None:
    self.window.append(metrics)
    if not due(done, self.every, self.last):
      return
    if self.check is not None:
      self.check(state)
    mean = jax.device_get(jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *self.window))
    if self.unconverged is not None and mean.get('solver_unconverged', 0) > 0:
      first = done - len(self.window) + 1
      for i, m in enumerate(jax.device_get(self.window)):
        if m['solver_unconverged'] > 0:
          self.unconverged(first + i, float(m['solver_unconverged']),
                           float(m['solver_residual']))
    count, self.window = len(self.window), []
    if self.writer is not None:
      self.writer.write(done, {**mean, 'time_s': self.clock.time_s(), 'steps_averaged': count})
      speed = {}
      train_s = self.clock.train_s()
      if self.window_start is not None and train_s > self.window_start:
        speed['steps_per_s'] = count / (train_s - self.window_start)
      self.window_start = train_s
      if self.learning_rate is not None:
        rate = self.learning_rate
        speed['meta_lr'] = rate(done - 1) if callable(rate) else rate
      self.writer.scalars(done, speed, 'train')
    if self.progress is not None:
      self.progress.set_postfix(step=done, query_loss=f'{float(mean["query_loss"]):.4f}')


class Validate:
  """Every `every` steps: held-out validation, written and offered to a `BestKeeper`."""

  def __init__(self, every: int, evaluate: Callable[[TrainState], list], writer, clock: Clock,
               best, check=None):
    self.every, self.evaluate, self.writer, self.clock = every, evaluate, writer, clock
    self.best, self.check = best, check

  def __call__(self, done: int, state: TrainState, metrics) -> None:
    del metrics
    if done % self.every:
      return
    if self.check is not None:
      self.check(state)
    with self.clock.evaluating():
      records = self.evaluate(state)
    if self.writer is not None:
      self.writer.write(done, {**{f'{r["metric"]}_{r["inner_steps"]}_steps': r['mean']
                                  for r in records}, 'time_s': self.clock.time_s()}, split='val')
    self.best.offer(done, records, state)


class SaveCheckpoints:
  """Every `every` steps, at the last, and when `stop_requested()`: a checkpoint."""

  def __init__(self, checkpointer, every: int, last: int, check=None,
               stop_requested: Callable[[], bool] = lambda: False):
    self.checkpointer, self.every, self.last = checkpointer, every, last
    self.check, self.stop_requested = check, stop_requested

  def __call__(self, done: int, state: TrainState, metrics) -> None:
    del metrics
    if due(done, self.every, self.last) or self.stop_requested():
      if self.check is not None:
        self.check(state)
      self.checkpointer.save(done, state)
