"""The training loop, assembled from the parts in `metajax.hooks`.

`train_and_evaluate(config, workdir)` builds the run (`metajax.run`), resumes
it from its last checkpoint if `workdir` holds one, drives the jitted
meta-step (`hooks.steps`) to `--num_steps` with hooks that log, validate and
checkpoint, then tests, and writes what the run directory holds
(`metajax.rundir`). Ctrl-C or SIGTERM finishes the step, checkpoints it and
raises `RunInterrupted`.
"""

import contextlib
import dataclasses
import os

from absl import logging
import jax

from metajax import hooks, interrupts, optimizers, parallel, progress as progress_lib, rundir
from metajax.checkpoint import Checkpointer
from metajax.config import Config
from metajax.data.source import DataSummary
from metajax.run import Run, build_run
from metajax.step import TrainState, raise_if_nonfinite
from metajax.writers import MetricWriter


class RunInterrupted(Exception):
  """SIGINT or SIGTERM stopped a run; what it had done is checkpointed in `workdir`.

  Attributes:
    workdir: the run directory.
    step: the step of its last complete checkpoint (None: none yet).
    signal_name: 'SIGINT' or 'SIGTERM'.
    stage: 'training' (stopped after a step and checkpointed it), 'at once' (a
      second signal stopped it mid-step) or 'testing' (training had finished).
  """

  def __init__(self, workdir: str, step, signal_name: str, stage: str = 'training'):
    where = os.path.join(workdir, 'checkpoints')
    if stage == 'testing':
      text = (f'{signal_name}: stopped while testing; training finished at step {step}, '
              f'checkpointed in {where}')
    elif stage == 'at once':
      text = (f'{signal_name} twice: stopped at once; ' +
              (f'the last complete checkpoint is step {step} in {where}' if step is not None
               else 'no checkpoint had been saved yet'))
    else:
      text = f'{signal_name}: stopped at step {step}; checkpoint saved in {where}'
    super().__init__(text)
    self.workdir, self.step, self.signal_name, self.stage = workdir, step, signal_name, stage


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
  rundir.make_workdir(workdir, create=False)
  parallel.initialize(config.coordinator_address, config.num_processes, config.process_id)
  primary = jax.process_index() == 0  # the one process that writes files and logs
  run = build_run(config, show_progress=show_progress and primary)
  config = run.config
  rundir.check_workdir(config, workdir)
  rundir.check_classes(workdir, rundir.class_record(run.source),
                       'Resume the run on the data it trained on, or train in a new --workdir.')
  if show_progress and primary and isinstance(run.source, DataSummary):
    progress_lib.say(run.source.summary())
  multiprocess = jax.process_count() > 1
  share = parallel.process_share(config.meta_batch_size) if multiprocess else None
  if multiprocess and run.supervised:
    raise ValueError(f'--algorithm={config.algorithm} trains on supervised batches in one '
                     'process')
  # A held-out split too small for the episodes fails now, not after training.
  for split in ('val', 'test') if config.eval_every else ('test',):
    next(iter(run.source.eval_batches(split, 1)))

  rundir.make_workdir(workdir)
  with rundir.exclusive(workdir) if primary else contextlib.nullcontext():
    return _train(run, workdir, show_progress, primary, share)


def _train(run: Run, workdir: str, show_progress: bool, primary: bool, share) -> RunResult:
  """The loop of `train_and_evaluate`, in a workdir this process holds."""
  config = run.config
  talk = show_progress and primary
  if primary:
    rundir.write_config(config, workdir)
    if rundir.read_classes(workdir) is None:
      rundir.write_classes(workdir, rundir.class_record(run.source))
  state = run.init_state()
  mesh = None
  if jax.device_count() > 1 or config.mesh_shape:
    mesh = parallel.make_mesh(config.mesh_shape)
    parallel.check_meta_batch(mesh, config.meta_batch_size)
    state = parallel.replicate(mesh, state)  # restored below in the same sharding
  checkpointer = Checkpointer(workdir, config.max_checkpoints)
  if talk and checkpointer.removed_incomplete:
    progress_lib.say(f'{workdir}: removed an incomplete checkpoint (step '
                     f'{", ".join(map(str, checkpointer.removed_incomplete))}) left by a run '
                     'stopped while saving it; ' + (
                         'resuming from the last complete one'
                         if checkpointer.latest_step() is not None
                         else 'no complete checkpoint is left, so training starts again'))
  state = _restore(run, workdir, state, checkpointer)
  start, last = int(state.step), config.num_steps
  if talk and start >= last:
    progress_lib.say(f'{workdir}: already finished at step {start}; evaluating only')
  elif talk and start:
    progress_lib.say(f'{workdir}: resuming from step {start} of {last}')
  writer = MetricWriter(workdir, resume_step=start) if primary else None
  # A resumed run's training clock goes on from its last logged row.
  clock = hooks.Clock(writer.last('time_s', 0.0) if writer is not None else 0.0)
  best = rundir.BestKeeper(workdir, run.metric) if config.eval_every else None
  check = lambda state: _check_finite(state, checkpointer)
  stop = interrupts.Graceful(announce=talk)
  log = hooks.LogMetrics(config.log_every, last, writer, clock, check,
                         learning_rate=optimizers.learning_rate(config.sections['run']),
                         unconverged=_warn_unconverged(config) if primary else None)
  after_step = [log]
  if best is not None:
    after_step.append(hooks.Validate(
        config.eval_every, lambda state: run.evaluate(_local(state.theta), 'val',
                                                      config.val_tasks),
        writer, clock, best, check))
  after_step.append(hooks.SaveCheckpoints(checkpointer, config.checkpoint_every, last, check,
                                          lambda: stop.requested))
  bound = getattr(getattr(run.source, 'train', None), 'shapes', None)
  progress = None

  def on_compile(batch, count):
    what = (f' for {batch.support.x.shape[1]} support and {batch.query.x.shape[1]} query '
            f'rows ({count + 1} of at most {len(bound)} shapes)' if bound else '')
    if talk:
      progress_lib.say(f'{config.algorithm} on {config.dataset}: compiling the meta-step' + what)

  def on_compiled(seconds):
    nonlocal progress
    if talk:
      progress_lib.say(f'compiled in {seconds:.1f} s')
    if progress is None:
      progress = progress_lib.Progress(last, start, enabled=talk,
                                       desc=f'{config.algorithm} on {config.dataset}')
      log.progress = progress

  at_once, saved = False, None
  try:
    with stop:
      for done, state, metrics in hooks.steps(
          run.step_fn(mesh), state, run.train_batches(start, last, share), start, last,
          place=_placer(mesh, share, config.meta_batch_size), clock=clock,
          on_compile=on_compile, on_compiled=on_compiled):
        log(done, state, metrics)
        progress.update(1)
        for hook in after_step[1:]:
          hook(done, state, metrics)
        if stop.requested:
          raise RunInterrupted(workdir, done, stop.signal_name)
  except KeyboardInterrupt:
    if not stop.requested:
      raise
    at_once = True  # a second signal, mid-step
  finally:
    train_s = clock.train_s()
    if progress is not None:
      progress.close()
    checkpointer.wait()
    saved = checkpointer.latest_step()
    checkpointer.close()
    if writer is not None:
      writer.close()
  if at_once:
    raise RunInterrupted(workdir, saved, stop.signal_name, 'at once')

  if best is not None:
    # The protocol: test the checkpoint that did best on the validation classes.
    state = best.restore(state) or state
    best.close()
  testing = interrupts.Graceful(announce=False, at_once=True)  # nothing left to save
  try:
    with clock.evaluating(), testing:
      records = run.evaluate(_local(state.theta), 'test', show_progress=talk)
  except KeyboardInterrupt:
    if not testing.requested:
      raise
    raise RunInterrupted(workdir, int(state.step), testing.signal_name, 'testing') from None
  for r in records:
    r['checkpoint_step'] = int(state.step)
    if best is not None:
      r['selected_on'] = 'val'
  if primary:
    rundir.write_eval(workdir, records)
    tensorboard = MetricWriter(workdir, resume_step=last)
    tensorboard.scalars(int(state.step), {f'{r["metric"]}_{r["inner_steps"]}_steps': r['mean']
                                          for r in records}, 'test')
    tensorboard.close()
  times = {'compile_s': clock.compile_s, 'train_s': train_s, 'eval_s': clock.eval_s,
           'steps': max(0, last - start)}
  if clock.compiles:
    times['compiles'] = clock.compiles
  return RunResult(run, workdir, state, records, times)


def _warn_unconverged(config: Config):
  """A warning, naming the step and the solver's settings, for a solve that did not converge."""
  limits = ' or '.join(f'--{n}={getattr(config, n)}' for n in config.spec.solver_settings)

  def warn(step: int, fraction: float, residual: float) -> None:
    tasks = round(fraction * config.meta_batch_size)
    progress_lib.say(
        f'warning: step {step}: the {config.algorithm} solve of {tasks} of '
        f'{config.meta_batch_size} tasks stopped at its iteration limit unconverged (mean '
        f'residual {residual:.2g}), so that step\'s meta-gradient is approximate; raise '
        f'{limits or "its limits"}')

  return warn


def _placer(mesh, share, meta_batch_size: int):
  """`(step, batch, key) -> (batch, key)` on the mesh (None: as they are)."""
  if share is not None:
    return lambda step, batch, key: (parallel.global_batch(mesh, batch, meta_batch_size),
                                     parallel.replicate(mesh, parallel.local_copy(key)))
  if mesh is not None:
    return lambda step, batch, key: (parallel.shard_tasks(mesh, batch),
                                     parallel.replicate(mesh, key))
  return None
