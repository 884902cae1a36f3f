"""The pure meta-step shared by every algorithm: state, meta-gradient, chunking, sharding, guard.

`meta_train_step(state, batch, key) -> (state, metrics)` is one jitted function
for every learner: the meta-gradient of each task (vmapped over the task axis,
optionally in chunks), its mean over tasks, and an optax meta-optimizer
update; for a learner with a `batch_loss`, the gradient of that loss on one
supervised batch. A non-finite meta-gradient freezes the state on the device.
"""

from typing import Any, Union

import flax
import jax
import jax.numpy as jnp
import optax

from metajax import parallel
from metajax.learner import MetaLearner
from metajax.types import Array, Metrics, Params, PRNGKey, Split, Task

# The key of meta-step s is fold_in(state.rng, s); jitted, it costs one dispatch.
step_key = jax.jit(jax.random.fold_in)


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


def outer_loss_at(learner: MetaLearner, step=0):
  """`learner.outer_loss` as `(theta, task, rng) -> (loss, aux)` at meta-step `step`."""
  if not learner.takes_step:
    return learner.outer_loss
  return lambda theta, task, rng: learner.outer_loss(theta, task, rng, jnp.asarray(step, jnp.int32))


def task_meta_gradient(learner: MetaLearner, theta: Params, task: Task,
                       rng: PRNGKey, step=0) -> tuple[Params, Metrics]:
  """The meta-gradient (or update direction) and metrics of one task (at meta-step `step`)."""
  if learner.meta_gradient is not None:
    return learner.meta_gradient(theta, task, rng)
  return jax.grad(outer_loss_at(learner, step), has_aux=True)(theta, task, rng)


def batch_meta_gradient(learner: MetaLearner, theta: Params, tasks: Task,
                        keys: PRNGKey, task_chunk: int = 0, step=0) -> tuple[Params, Metrics]:
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
    step: the meta-steps completed (read by learners that `takes_step`).

  For a learner with an `outer_loss` each chunk's meta-gradient is the gradient
  of its summed loss, so XLA sums over the chunk's tasks inside the backward
  pass instead of materialising one gradient per task.
  """
  num_tasks = keys.shape[0]
  chunk = task_chunk or num_tasks
  if num_tasks % chunk:
    raise ValueError(f'task_chunk={task_chunk}: the meta-batch of {num_tasks} '
                     'tasks is not a multiple of it')

  def chunk_sums(chunk_tasks, chunk_keys):
    if learner.outer_loss is not None:

      def summed_loss(theta):
        losses, aux = jax.vmap(outer_loss_at(learner, step), in_axes=(None, 0, 0))(
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


def make_meta_train_step(learner: MetaLearner, optimizer: optax.GradientTransformation,
                         donate: bool = True, task_chunk: int = 0, mesh=None):
  """The jitted `meta_train_step(state, batch, key) -> (state, metrics)`.

  `batch` is a batch of tasks, or for a learner with a `batch_loss` one
  supervised `Split`. `task_chunk` is as in `batch_meta_gradient`. With a
  `mesh` (`metajax.parallel.make_mesh`) the leading axis of `batch` is sharded
  over its 'tasks' axis and the state and metrics are replicated: the same
  function runs on 1 or N devices.
  """

  def gradient(theta, batch: Union[Task, Split], key, step):
    if learner.batch_loss is not None:
      return jax.grad(learner.batch_loss, has_aux=True)(theta, batch, key)
    keys = jax.random.split(key, jax.tree.leaves(batch)[0].shape[0])
    return batch_meta_gradient(learner, theta, batch, keys, task_chunk, step)

  def meta_train_step(state: TrainState, batch, key: PRNGKey):
    grads, metrics = gradient(state.theta, batch, key, state.step)
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
        nonfinite_step=jnp.where(still_good & ~ok, next_step, state.nonfinite_step))
    return new_state, {**metrics, 'grad_norm': grad_norm}

  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(meta_train_step, donate_argnums=donate_argnums)
  replicated = parallel.NamedSharding(mesh, parallel.P())
  sharded = parallel.NamedSharding(mesh, parallel.P(parallel.TASKS))
  return jax.jit(meta_train_step, donate_argnums=donate_argnums,
                 in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated))


def raise_if_nonfinite(state: TrainState, last_good: str,
                       advice: str = 'Lower the inner or the meta learning rate.') -> None:
  """NonFiniteMetaGradientError if `state` froze on a non-finite meta-gradient.

  `last_good` says where the last good state is, `advice` what to change.
  """
  bad = int(state.nonfinite_step)
  if bad >= 0:
    raise NonFiniteMetaGradientError(
        f'the meta-gradient at meta-step {bad} has a NaN or an infinity; '
        f'training stopped and {last_good}. {advice}')
