"""The meta-training loop shared by every algorithm.

`meta_train_step(state, tasks, key) -> (state, metrics)` is one jitted function
for every learner: the meta-gradient of each task (vmapped over the task axis),
its mean over tasks, and an optax meta-optimizer update. `train_and_evaluate`
runs it with checkpoints, logging, resumption and a final held-out evaluation.
"""

import dataclasses
import json
import os
from typing import Any, Optional

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from metajax import builders, evaluate as evaluation, parallel
from metajax.checkpoint import Checkpointer
from metajax.config import Config, differing_fields, meta_optimizer
from metajax.learner import MetaLearner
from metajax.types import Array, Metrics, Params, PRNGKey, Task
from metajax.writers import MetricWriter


# The key of meta-step s is fold_in(state.rng, s); jitted, it costs one dispatch.
step_key = jax.jit(jax.random.fold_in)


class ConfigMismatchError(ValueError):
  """A workdir holds a run whose settings differ from the requested ones."""


class NonFiniteMetaGradientError(FloatingPointError):
  """A meta-gradient had a NaN or an infinity."""


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: saved whole in every checkpoint.

  Attributes:
    step: meta-steps completed.
    theta: meta-parameters.
    opt_state: the meta-optimizer's state.
    rng: base key; step s uses `fold_in(rng, s)`.
    nonfinite_step: -1, or the first meta-step whose meta-gradient was not
      finite. From that step on the state no longer changes, so the host can
      check it lazily (at logging and checkpoint time) without a sync per step.
  """
  step: Array
  theta: Params
  opt_state: Any
  rng: PRNGKey
  nonfinite_step: Array


def create_train_state(learner: MetaLearner, optimizer: optax.GradientTransformation,
                       rng: PRNGKey, example_task: Task) -> TrainState:
  init_key, train_key = jax.random.split(rng)
  theta = learner.init(init_key, example_task)
  return TrainState(step=jnp.zeros((), jnp.int32), theta=theta,
                    opt_state=optimizer.init(theta), rng=train_key,
                    nonfinite_step=jnp.full((), -1, jnp.int32))


def batch_meta_gradient(learner: MetaLearner, theta: Params, tasks: Task,
                        keys: PRNGKey, task_chunk: int = 0) -> tuple[Params, Metrics]:
  """Mean over the task axis of the per-task meta-gradients, and mean metrics.

  Args:
    learner: the algorithm.
    theta: meta-parameters.
    tasks: a batch of T tasks (leading axis T).
    keys: T keys.
    task_chunk: tasks vmapped together. 0 or T: all T at once (one vmap).
      Otherwise T must be a multiple of it: a `lax.scan` over T / task_chunk
      chunks adds up the chunks' meta-gradients, so only one chunk's
      activations are alive at a time. The result is the same up to the
      order of floating-point sums.

  For a learner with an `outer_loss` each chunk's meta-gradient is the gradient
  of its summed loss, so XLA sums over the chunk's tasks inside the backward
  pass instead of materialising one gradient per task.
  """
  num_tasks = keys.shape[0]
  chunk = task_chunk or num_tasks
  if num_tasks % chunk:
    raise ValueError(f'--task_chunk={task_chunk}: the meta-batch of {num_tasks} '
                     'tasks is not a multiple of it')

  def chunk_sums(chunk_tasks, chunk_keys):
    if learner.outer_loss is not None:

      def summed_loss(theta):
        losses, aux = jax.vmap(learner.outer_loss, in_axes=(None, 0, 0))(
            theta, chunk_tasks, chunk_keys)
        return jnp.sum(losses), aux

      grads, aux = jax.grad(summed_loss, has_aux=True)(theta)
    else:
      grads, aux = jax.vmap(learner.meta_gradient, in_axes=(None, 0, 0))(
          theta, chunk_tasks, chunk_keys)
      grads = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
    return grads, jax.tree.map(lambda v: jnp.sum(v, axis=0), aux)

  if chunk == num_tasks:
    sums = chunk_sums(tasks, keys)
  else:
    # Task t goes to chunk t % n, position t // n: with the task axis sharded
    # in contiguous blocks over devices, the within-chunk axis stays sharded
    # and the scan runs over an unsharded axis.
    n = num_tasks // chunk
    split = lambda v: jnp.swapaxes(v.reshape((chunk, n) + v.shape[1:]), 0, 1)

    def body(total, xs):
      return jax.tree.map(jnp.add, total, chunk_sums(*xs)), None

    zeros = jax.eval_shape(chunk_sums, jax.tree.map(lambda v: v[:chunk], tasks),
                           keys[:chunk])  # shapes only
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
    sums, _ = jax.lax.scan(body, zeros, jax.tree.map(split, (tasks, keys)))
  return jax.tree.map(lambda v: v / num_tasks, sums)


def make_meta_train_step(learner: MetaLearner,
                         optimizer: optax.GradientTransformation,
                         donate: bool = True, task_chunk: int = 0, mesh=None):
  """The jitted `meta_train_step(state, tasks, key) -> (state, metrics)`.

  `task_chunk` is as in `batch_meta_gradient`. With a `mesh`
  (`metajax.parallel.make_mesh`) the task axis of `tasks` is sharded over its
  'tasks' axis and the state and metrics are replicated: the same function
  runs on 1 or N devices.
  """

  def meta_train_step(state: TrainState, tasks: Task, key: PRNGKey):
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    keys = jax.random.split(key, num_tasks)
    grads, metrics = batch_meta_gradient(learner, state.theta, tasks, keys,
                                          task_chunk)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    still_good = state.nonfinite_step < 0
    ok = jnp.isfinite(grad_norm) & still_good
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    next_step = state.step + 1
    new_state = state.replace(
        step=next_step,
        theta=keep(theta, state.theta),
        opt_state=keep(opt_state, state.opt_state),
        nonfinite_step=jnp.where(still_good & ~ok, next_step,
                                 state.nonfinite_step))
    return new_state, {**metrics, 'grad_norm': grad_norm}

  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(meta_train_step, donate_argnums=donate_argnums)
  replicated = parallel.NamedSharding(mesh, parallel.P())
  sharded = parallel.NamedSharding(mesh, parallel.P(parallel.TASKS))
  return jax.jit(meta_train_step, donate_argnums=donate_argnums,
                 in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated))


@dataclasses.dataclass
class RunResult:
  config: Config
  workdir: str
  source: Any
  learner: MetaLearner
  state: TrainState    # the evaluated state: best on validation if --eval_every, else last
  records: list[dict]  # held-out evaluation, one record per inner-step count


def check_workdir(config: Config, workdir: str) -> None:
  """Refuses a workdir that holds a run with other model/algorithm/data flags."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = Config.from_dict(json.load(f))
  diff = differing_fields(saved, config)
  if diff:
    details = '; '.join(
        f'--{name}={_flag_value(getattr(saved, name))} there, '
        f'{_flag_value(getattr(config, name))} here' for name in diff)
    raise ConfigMismatchError(
        f'--workdir={workdir} holds a run with other settings ({details}). '
        'Resume it with its own flags, or choose a new --workdir.')


def _flag_value(value) -> str:
  if isinstance(value, tuple):
    return ','.join(map(str, value))
  return str(value)


class BestKeeper:
  """Keeps the state with the best validation score in `<workdir>/best`.

  The score is the validation metric after the most inner steps evaluated;
  higher is better for accuracy, lower for MSE. `best/best.json` records it.
  """

  def __init__(self, workdir: str, metric: str):
    self.checkpointer = Checkpointer(workdir, max_to_keep=1, subdir='best')
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


def _check_finite(state: TrainState, checkpointer: Checkpointer) -> None:
  bad = int(state.nonfinite_step)
  if bad >= 0:
    last = checkpointer.latest_step()
    where = (f'the last good checkpoint, step {last}, is intact in '
             f'{checkpointer.directory}' if last is not None
             else 'no checkpoint had been saved yet')
    raise NonFiniteMetaGradientError(
        f'the meta-gradient at meta-step {bad} has a NaN or an infinity; '
        f'training stopped and {where}. Lower --inner_lr or --meta_lr.')


def evaluate_state(config: Config, source, learner: MetaLearner,
                   theta: Params, split: str = 'test',
                   num_tasks: Optional[int] = None) -> list[dict]:
  num_tasks = num_tasks or config.eval_tasks
  _, metric_fn, metric = builders.objective(config)
  records = evaluation.evaluate(
      learner, metric_fn, metric, theta,
      lambda: source.eval_batches(split, num_tasks),
      jax.random.PRNGKey(0), config.eval_inner_steps)
  for r in records:
    r.update(split=split, algorithm=config.algorithm, dataset=config.dataset)
  return records


def for_episodes(config: Config, learner: MetaLearner, ways: Optional[int] = None,
                 shots: Optional[int] = None) -> Config:
  """`config` with test episodes of other ways / shots than it trained on.

  Only learners whose classes come from the support set (protonet,
  predictor) can; one with an N-way head is refused, naming the flag.
  """
  changes = {k: v for k, v in (('ways', ways), ('shots', shots)) if v is not None}
  if not changes:
    return config
  if not learner.any_ways:
    raise ValueError(f'--{next(iter(changes))}: only learners whose classes come from the '
                     f'support set (protonet, predictor) can be tested on other episodes '
                     f'than they trained on; '
                     f'{config.algorithm} has a {config.num_ways}-way head')
  return config.replace(train_ways=config.num_train_ways, **changes).validate()


def _local(tree):
  """Meta-parameters as this process's own arrays (for evaluation)."""
  return parallel.local_copy(tree) if jax.process_count() > 1 else tree


def train_and_evaluate(config: Config, workdir: str,
                       show_progress: bool = True) -> RunResult:
  """Meta-trains `config` in `workdir` (resuming it if it has checkpoints).

  Writes `config.json`, `metrics.jsonl`, TensorBoard events, checkpoints and
  `eval.json` (held-out evaluation) to `workdir`.

  Raises:
    ValueError: a bad setting (naming its flag); nothing is written.
    ConfigMismatchError: `workdir` holds a run with other settings.
    NonFiniteMetaGradientError: a meta-gradient was not finite.
  """
  config.validate()
  parallel.initialize(config.coordinator_address, config.num_processes, config.process_id)
  primary = jax.process_index() == 0  # the one process that writes files and logs
  source = builders.make_source(config, show_progress and primary)
  config = builders.resolve(config, source)
  check_workdir(config, workdir)
  learner = builders.make_learner(config)
  optimizer = meta_optimizer(config)

  os.makedirs(workdir, exist_ok=True)
  if primary:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json())

  state = create_train_state(learner, optimizer, jax.random.PRNGKey(config.seed),
                             builders.example_task(config))
  mesh = None
  if jax.device_count() > 1 or config.mesh_shape:
    mesh = parallel.make_mesh(config.mesh_shape)
    parallel.check_meta_batch(mesh, config.meta_batch_size)
    state = parallel.replicate(mesh, state)  # restored below in the same sharding
  checkpointer = Checkpointer(workdir, config.max_checkpoints)
  if checkpointer.latest_step() is not None:
    try:
      state = checkpointer.restore(state)
    except Exception as e:  # orbax raises several types for a mismatched tree
      raise ConfigMismatchError(
          f'the checkpoint in {checkpointer.directory} does not fit this '
          f'config ({type(e).__name__}: {str(e)[:300]})') from e
    logging.info('Resumed %s from step %d', workdir, int(state.step))
  start = int(state.step)
  writer = MetricWriter(workdir, resume_step=start) if primary else None
  meta_train_step = make_meta_train_step(
      learner, optimizer, task_chunk=builders.task_chunk(config), mesh=mesh)

  best = BestKeeper(workdir, builders.objective(config)[2]) if config.eval_every else None
  window = []
  progress = tqdm.tqdm(total=config.num_steps, initial=start,
                       desc=f'{config.algorithm} on {config.dataset}',
                       disable=not (show_progress and primary), mininterval=2.0)
  multiprocess = jax.process_count() > 1
  share = parallel.process_share(config.meta_batch_size) if multiprocess else None
  try:
    batches = source.batches(start, config.num_steps, share)
    for step, tasks in zip(range(start, config.num_steps), batches):
      key = step_key(state.rng, step)
      if multiprocess:
        tasks = parallel.global_batch(mesh, tasks, config.meta_batch_size)
        key = parallel.replicate(mesh, parallel.local_copy(key))
      elif mesh is not None:
        tasks, key = parallel.shard_tasks(mesh, tasks), parallel.replicate(mesh, key)
      state, metrics = meta_train_step(state, tasks, key)
      window.append(metrics)
      done = step + 1
      progress.update(1)
      if done % config.log_every == 0 or done == config.num_steps:
        _check_finite(state, checkpointer)
        mean = jax.device_get(jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)),
                                           *window))
        window = []
        if writer is not None:
          writer.write(done, mean)
        progress.set_postfix(query_loss=f'{float(mean["query_loss"]):.4f}')
      if config.eval_every and done % config.eval_every == 0:
        _check_finite(state, checkpointer)
        records = evaluate_state(config, source, learner, _local(state.theta), 'val')
        if writer is not None:
          writer.write(done, {f'{r["metric"]}_{r["inner_steps"]}_steps': r['mean']
                            for r in records}, split='val')
        best.offer(done, records, state)
      if done % config.checkpoint_every == 0 or done == config.num_steps:
        _check_finite(state, checkpointer)
        checkpointer.save(done, state)
  finally:
    progress.close()
    checkpointer.wait()
    checkpointer.close()
    if writer is not None:
      writer.close()

  if best is not None:
    # The protocol: test the checkpoint that did best on the validation classes.
    state = best.restore(state) or state
    best.close()
  records = evaluate_state(config, source, learner, _local(state.theta), 'test')
  for r in records:
    r['checkpoint_step'] = int(state.step)
    if best is not None:
      r['selected_on'] = 'val'
  if primary:
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(records, f, indent=2)
  return RunResult(config, workdir, source, learner, state, records)


def load_run(workdir: str, step: Optional[int] = None, prefer_best: bool = True):
  """(config, learner, state) of a trained run.

  Loads checkpoint `step`; by default the best-on-validation checkpoint when
  the run kept one (`--eval_every`), else the latest. Needs no data: only the
  run directory.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'--workdir={workdir} holds no run (no config.json)')
  with open(path) as f:
    config = Config.from_dict(json.load(f)).validate()
  learner = builders.make_learner(config)
  state = create_train_state(learner, meta_optimizer(config),
                             jax.random.PRNGKey(config.seed),
                             builders.example_task(config))
  if step is None and prefer_best:
    best = BestKeeper(workdir, builders.objective(config)[2])
    restored = best.restore(state)
    best.close()
    if restored is not None:
      return config, learner, restored
  checkpointer = Checkpointer(workdir, config.max_checkpoints)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f'--workdir={workdir} holds no checkpoint')
  state = checkpointer.restore(state, step)
  checkpointer.close()
  return config, learner, state
