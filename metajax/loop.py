"""The training loop: schedule, logging, validation, checkpoints, progress, final test.

`train_and_evaluate(config, workdir)` builds the run (`metajax.run`), resumes
it from its last checkpoint if `workdir` holds one, runs the jitted meta-step
(`metajax.step`) to `--num_steps`, and writes what the run directory holds
(`metajax.rundir`).
"""

import contextlib
import dataclasses
import os
import time

from absl import logging
import jax
import jax.numpy as jnp

from metajax import interrupts, parallel, progress as progress_lib, rundir
from metajax.checkpoint import Checkpointer
from metajax.config import Config
from metajax.run import Run, build_run
from metajax.step import TrainState, raise_if_nonfinite, step_key
from metajax.writers import MetricWriter


class RunInterrupted(Exception):
  """SIGINT or SIGTERM stopped training; the state of the last step is checkpointed."""

  def __init__(self, workdir: str, step: int, signal_name: str):
    super().__init__(f'{signal_name}: stopped at step {step}; checkpoint saved in {workdir}. '
                     'Run the same command again to resume from it.')
    self.workdir, self.step, self.signal_name = workdir, step, signal_name


@dataclasses.dataclass
class RunResult:
  run: Run
  workdir: str
  state: TrainState    # the evaluated state: best on validation if --eval_every, else last
  records: list[dict]  # held-out evaluation, one record per inner-step count
  # Seconds of compilation, of training steps (validation excluded) and of
  # evaluation (validation and test), and the meta-steps this call ran.
  times: dict = dataclasses.field(default_factory=dict)

  def summary(self) -> str:
    """'maml: 20000 meta-steps in 13.1 s (compiled in 0.6 s); evaluation 2.0 s'."""
    name, t = self.config.algorithm, self.times
    if not t.get('steps'):
      return (f'{name}: already finished at step {int(self.state.step)}; '
              f'evaluation {t.get("eval_s", 0):.1f} s')
    compiles = t.get('compiles', 1)
    return (f'{name}: {t["steps"]} meta-steps in {t["train_s"]:.1f} s (compiled '
            f'{f"{compiles} times " if compiles > 1 else ""}in {t["compile_s"]:.1f} s); '
            f'evaluation {t["eval_s"]:.1f} s')

  @property
  def config(self) -> Config:
    return self.run.config

  @property
  def learner(self):
    return self.run.learner


def _check_finite(state: TrainState, checkpointer: Checkpointer) -> None:
  last = checkpointer.latest_step()
  raise_if_nonfinite(state, f'the last good checkpoint, step {last}, is intact in '
                     f'{checkpointer.directory}' if last is not None
                     else 'no checkpoint had been saved yet', 'Lower --inner_lr or --meta_lr.')


def _local(tree):
  """Meta-parameters as this process's own arrays (for evaluation)."""
  return parallel.local_copy(tree) if jax.process_count() > 1 else tree


def _restore(run: Run, workdir: str, state: TrainState, checkpointer: Checkpointer):
  if checkpointer.latest_step() is None:
    return state
  try:
    state = checkpointer.restore(state)
  except Exception as e:  # orbax raises several types for a mismatched tree
    raise rundir.ConfigMismatchError(
        f'the checkpoint in {checkpointer.directory} does not fit this '
        f'config ({type(e).__name__}: {str(e)[:300]})') from e
  logging.info('Resumed %s from step %d', workdir, int(state.step))
  return state


def train_and_evaluate(config: Config, workdir: str, show_progress: bool = True) -> RunResult:
  """Meta-trains `config` in `workdir` (resuming it if it has checkpoints).

  Writes `config.json`, `flags.txt`, `metrics.jsonl`, TensorBoard events,
  checkpoints and `eval.json` (held-out evaluation) to `workdir`.

  Raises:
    ValueError: a bad setting (naming its flag); nothing is written.
    rundir.ConfigMismatchError: `workdir` holds a run with other settings.
    rundir.RunDirectoryBusyError: another live process is writing to `workdir`.
    step.NonFiniteMetaGradientError: a meta-gradient was not finite.
  """
  config.validate()
  parallel.initialize(config.coordinator_address, config.num_processes, config.process_id)
  primary = jax.process_index() == 0  # the one process that writes files and logs
  run = build_run(config, show_progress=show_progress and primary)
  config = run.config
  rundir.check_workdir(config, workdir)
  multiprocess = jax.process_count() > 1
  share = parallel.process_share(config.meta_batch_size) if multiprocess else None
  if multiprocess and run.supervised:
    raise ValueError(f'--algorithm={config.algorithm} trains on supervised batches in one '
                     'process')
  # A held-out split too small for the episodes fails now, not after training.
  for split in ('val', 'test') if config.eval_every else ('test',):
    next(iter(run.source.eval_batches(split, 1)))

  os.makedirs(workdir, exist_ok=True)
  with rundir.exclusive(workdir) if primary else contextlib.nullcontext():
    return _train(run, workdir, show_progress, primary, share)


def _train(run: Run, workdir: str, show_progress: bool, primary: bool, share) -> RunResult:
  """The loop of `train_and_evaluate`, in a workdir this process holds."""
  config = run.config
  talk = show_progress and primary
  multiprocess = share is not None
  if primary:
    rundir.write_config(config, workdir)
  state = run.init_state()
  mesh = None
  if jax.device_count() > 1 or config.mesh_shape:
    mesh = parallel.make_mesh(config.mesh_shape)
    parallel.check_meta_batch(mesh, config.meta_batch_size)
    state = parallel.replicate(mesh, state)  # restored below in the same sharding
  checkpointer = Checkpointer(workdir, config.max_checkpoints)
  state = _restore(run, workdir, state, checkpointer)
  start = int(state.step)
  times = {'compile_s': 0.0, 'train_s': 0.0, 'eval_s': 0.0,
           'steps': max(0, config.num_steps - start)}
  if talk and start >= config.num_steps:
    progress_lib.say(f'{workdir}: already finished at step {start}; evaluating only')
  elif talk and start:
    progress_lib.say(f'{workdir}: resuming from step {start} of {config.num_steps}')
  writer = MetricWriter(workdir, resume_step=start) if primary else None
  # Seconds of training (compilation included, evaluation not) before this call: a
  # resumed run's clock goes on from its last logged row.
  earlier_s = writer.last('time_s', 0.0) if writer is not None else 0.0
  best = rundir.BestKeeper(workdir, run.metric) if config.eval_every else None

  def placed(step, batch):
    key = step_key(state.rng, step)
    if multiprocess:
      return (parallel.global_batch(mesh, batch, config.meta_batch_size),
              parallel.replicate(mesh, parallel.local_copy(key)))
    if mesh is not None:
      return parallel.shard_tasks(mesh, batch), parallel.replicate(mesh, key)
    return batch, key

  window, progress = [], None
  started = time.perf_counter()
  clock_s = lambda: earlier_s + time.perf_counter() - started - times['eval_s']
  # The meta-step compiled ahead of time for each batch shape (one, but for
  # variable episodes: one per padded shape met), so that rates count steps only.
  step_fn, compiled = run.step_fn(mesh), {}
  bound = getattr(getattr(run.source, 'train', None), 'shapes', None)
  stop = interrupts.Graceful(announce=talk)
  try:
    stop.__enter__()
    for step, batch in zip(range(start, config.num_steps),
                           run.train_batches(start, config.num_steps, share)):
      batch, key = placed(step, batch)
      shape = tuple(v.shape for v in jax.tree.leaves(batch))
      if shape not in compiled:
        clock = time.perf_counter()
        what = (f' for {batch.support.x.shape[1]} support and {batch.query.x.shape[1]} query '
                f'rows ({len(compiled) + 1} of at most {len(bound)} shapes)' if bound else '')
        if talk:
          progress_lib.say(f'{config.algorithm} on {config.dataset}: compiling the meta-step'
                           + what)
        compiled[shape] = step_fn.lower(state, batch, key).compile()
        seconds = time.perf_counter() - clock
        times['compile_s'] += seconds
        times['compiles'] = len(compiled)
        if progress is not None:
          times['late_compile_s'] = times.get('late_compile_s', 0.0) + seconds
        if talk:
          progress_lib.say(f'compiled in {seconds:.1f} s')
      if progress is None:
        progress = progress_lib.Progress(config.num_steps, start, enabled=talk,
                                         desc=f'{config.algorithm} on {config.dataset}')
      state, metrics = compiled[shape](state, batch, key)
      window.append(metrics)
      done = step + 1
      if done % config.log_every == 0 or done == config.num_steps:
        _check_finite(state, checkpointer)
        mean = jax.device_get(jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *window))
        window = []
        if writer is not None:
          writer.write(done, {**mean, 'time_s': clock_s()})
        progress.set_postfix(step=done, query_loss=f'{float(mean["query_loss"]):.4f}')
      progress.update(1)
      if config.eval_every and done % config.eval_every == 0:
        _check_finite(state, checkpointer)
        clock = time.perf_counter()
        records = run.evaluate(_local(state.theta), 'val', config.val_tasks)
        times['eval_s'] += time.perf_counter() - clock
        if writer is not None:
          writer.write(done, {**{f'{r["metric"]}_{r["inner_steps"]}_steps': r['mean']
                                 for r in records}, 'time_s': clock_s()}, split='val')
        best.offer(done, records, state)
      if done % config.checkpoint_every == 0 or done == config.num_steps or stop.requested:
        _check_finite(state, checkpointer)
        checkpointer.save(done, state)
      if stop.requested:
        raise RunInterrupted(workdir, done, stop.signal_name)
  finally:
    stop.__exit__(None, None, None)
    if progress is not None:
      progress.close()
      times['train_s'] = (time.perf_counter() - progress.start - times['eval_s']
                          - times.pop('late_compile_s', 0.0))
    checkpointer.wait()
    checkpointer.close()
    if writer is not None:
      writer.close()

  if best is not None:
    # The protocol: test the checkpoint that did best on the validation classes.
    state = best.restore(state) or state
    best.close()
  clock = time.perf_counter()
  records = run.evaluate(_local(state.theta), 'test', show_progress=talk)
  times['eval_s'] += time.perf_counter() - clock
  for r in records:
    r['checkpoint_step'] = int(state.step)
    if best is not None:
      r['selected_on'] = 'val'
  if primary:
    rundir.write_eval(workdir, records)
  return RunResult(run, workdir, state, records, times)
