"""The parts of MAML's meta-gradient, per task and over a batch of tasks.

For a task with support loss L_s and query loss L_q and the inner loop
phi = U(theta) (k steps of an inner optimizer on L_s), the exact meta-gradient
is J_U(theta)^T grad L_q(phi). With SGD at rate alpha,

    J_U = prod_j (I - alpha H_s(phi_j)),

so the exact (second-order) meta-gradient splits into the first-order term
grad L_q(phi) (what first-order MAML uses) and a Hessian correction, their
difference. The implicit meta-gradient (iMAML) replaces J_U by
(I + H_s(phi) / lambda)^-1, exact for the proximally regularised inner problem.

`compare_meta_gradients` returns all of them per task, with cosines, norm
ratios and signal-to-noise ratios over the batch.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import optax

from metajax import inner
from metajax.algorithms.imaml import implicit_meta_gradient
from metajax.algorithms.common import split_loss
from metajax.types import Array, LossFn, Params, Task


def cosine(a: Array, b: Array, axis: int = -1) -> Array:
  """Cosine similarity of vectors along `axis` (0 where a vector is 0)."""
  dot = jnp.sum(a * b, axis)
  norms = jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis)
  return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1), 0.0)


def signal_to_noise(per_task: Array) -> Array:
  """||mean g||^2 / (mean ||g - mean g||^2) over the task axis 0 of [T, n] grads.

  Above 1 the tasks agree more than they disagree; the variance of a
  meta-batch of B tasks' mean gradient is (denominator) / B.
  """
  mean = jnp.mean(per_task, 0)
  noise = jnp.mean(jnp.sum(jnp.square(per_task - mean), -1))
  return jnp.sum(jnp.square(mean)) / noise


def inner_trajectory(loss: Callable[[Params], Array], params: Params,
                     optimizer: optax.GradientTransformation, num_steps: int) -> list[Params]:
  """[phi_0 = params, phi_1, ..., phi_num_steps] of the inner loop on `loss`."""
  points, state = [params], optimizer.init(params)
  for _ in range(num_steps):
    updates, state = optimizer.update(jax.grad(loss)(points[-1]), state, points[-1])
    points.append(optax.apply_updates(points[-1], updates))
  return points


def task_meta_gradients(model: nn.Module, loss_fn: LossFn, variables: Params, task: Task,
                        optimizer: optax.GradientTransformation, num_steps: int,
                        lam: float, cg_steps: int) -> dict[str, Array]:
  """The flattened meta-gradients of one task (see the module docstring).

  Returns:
    A dict of [n] vectors: 'second_order' (exact, through the unrolled inner
    loop), 'first_order' (grad L_q at phi), 'hessian_term' (their
    difference) and 'implicit' ((I + H_s(phi)/lambda)^-1 grad L_q(phi)).
  """
  support = lambda v: split_loss(model, loss_fn, v, task.support)
  query = lambda v: split_loss(model, loss_fn, v, task.query)

  def outer(v, first_order):
    phi = inner.inner_loop(support, v, optimizer, num_steps, first_order=first_order).params
    return query(phi)

  so = jax.grad(outer)(variables, False)
  fo = jax.grad(outer)(variables, True)
  phi = inner.inner_loop(support, variables, optimizer, num_steps).params
  implicit = implicit_meta_gradient(support, phi, jax.grad(query)(phi), lam, cg_steps)
  flat = lambda tree: ravel_pytree(tree)[0]
  so, fo, implicit = flat(so), flat(fo), flat(implicit)
  return {'second_order': so, 'first_order': fo, 'hessian_term': so - fo,
          'implicit': implicit}


def compare_meta_gradients(model: nn.Module, loss_fn: LossFn, variables: Params,
                           tasks: Task, *, inner_optimizer: optax.GradientTransformation,
                           inner_steps: int, lam: float = 1.0, cg_steps: int = 10,
                           per_task: bool = False) -> dict[str, Any]:
  """Second-order, first-order, Hessian-term and implicit meta-gradients of a batch.

  Args:
    model, loss_fn: the learner's model and loss.
    variables: the model's variables theta (e.g. `state.theta['model']`).
    tasks: a batch of T tasks.
    inner_optimizer, inner_steps: the inner loop (any optax transformation).
    lam, cg_steps: the implicit gradient's lambda and CG iterations.
    per_task: also return the [T, n] gradients.

  Returns:
    A dict of floats: for the mean over tasks, `cos_so_fo`, `cos_so_implicit`,
    `norm_so`, `norm_fo`, `norm_hessian_term`, `ratio_hessian_fo` (||H term|| /
    ||FO||); per-task means of the same cosines and ratio (`task_*`); and the
    signal-to-noise ratio of each kind over the tasks (`snr_*`).
  """
  grads = jax.jit(jax.vmap(
      lambda t: task_meta_gradients(model, loss_fn, variables, t, inner_optimizer, inner_steps,
                                    lam, cg_steps)))(tasks)
  mean = {k: jnp.mean(v, 0) for k, v in grads.items()}
  norm = lambda v: float(jnp.linalg.norm(v))
  out = {
      'inner_steps': inner_steps, 'num_tasks': int(grads['first_order'].shape[0]),
      'cos_so_fo': float(cosine(mean['second_order'], mean['first_order'])),
      'cos_so_implicit': float(cosine(mean['second_order'], mean['implicit'])),
      'norm_so': norm(mean['second_order']), 'norm_fo': norm(mean['first_order']),
      'norm_hessian_term': norm(mean['hessian_term']),
      'task_cos_so_fo': float(jnp.mean(cosine(grads['second_order'], grads['first_order']))),
      'task_cos_so_implicit': float(jnp.mean(cosine(grads['second_order'],
                                                    grads['implicit']))),
      'task_ratio_hessian_fo': float(jnp.mean(
          jnp.linalg.norm(grads['hessian_term'], axis=-1)
          / jnp.linalg.norm(grads['first_order'], axis=-1))),
  }
  out['ratio_hessian_fo'] = out['norm_hessian_term'] / out['norm_fo']
  for k in ('second_order', 'first_order', 'implicit'):
    out[f'snr_{k}'] = float(signal_to_noise(grads[k]))
  if per_task:
    out['per_task'] = grads
  return out


__all__ = ['cosine', 'signal_to_noise', 'inner_trajectory', 'task_meta_gradients',
           'compare_meta_gradients']
