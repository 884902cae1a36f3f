"""iMAML: implicit gradients of a proximally regularised inner problem.

Each task's adapted parameters approximately solve

    phi*(theta) = argmin_phi  L_support(phi) + lambda / 2 * ||phi - theta||^2,

and the meta-gradient is the implicit one,

    d L_query(phi*) / d theta = (I + H / lambda)^-1 grad L_query(phi*),

with H the Hessian of L_support at phi*. It needs no backpropagation through
the inner loop (memory does not grow with the inner steps); the linear system
is solved by conjugate gradient on Hessian-vector products
(`jax.scipy.sparse.linalg.cg`, forward-over-reverse HVPs).

Reference:
  Rajeswaran, Finn, Kakade & Levine, "Meta-Learning with Implicit Gradients",
  NeurIPS 2019.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import inner
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register
from metajax.settings import setting
from metajax.learner import Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task


def hvp(f: Callable[[Params], Array], x: Params, v: Params) -> Params:
  """Hessian of scalar `f` at `x` times `v`, by forward-over-reverse."""
  return jax.jvp(jax.grad(f), (x,), (v,))[1]


def implicit_meta_gradient(support_loss: Callable[[Params], Array], phi: Params,
                           query_grad: Params, lam: float, cg_steps: int) -> Params:
  """(I + H / lam)^-1 query_grad by `cg_steps` steps of conjugate gradient.

  Args:
    support_loss: L_support as a function of the model parameters.
    phi: the inner solution, where the Hessian H of `support_loss` is taken.
    query_grad: grad L_query(phi).
    lam: the proximal strength lambda (> 0).
    cg_steps: conjugate-gradient iterations (exact after as many iterations as
      there are parameters, in exact arithmetic, when I + H / lam is positive
      definite).
  """

  def matvec(v):
    return jax.tree.map(lambda a, b: a + b / lam, v, hvp(support_loss, phi, v))

  solution, _ = jax.scipy.sparse.linalg.cg(matvec, query_grad, maxiter=cg_steps,
                                           tol=0.0, atol=0.0)
  return solution


def imaml(model: nn.Module, loss_fn: LossFn, *,
          inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
          inner_steps: int = 5, imaml_lambda: float = 1.0, cg_steps: int = 5) -> MetaLearner:
  """Implicit MAML.

  Args:
    model: a flax module.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_optimizer: optax transformation run on the regularised support loss.
    inner_steps: inner steps (the inner problem should be solved well: iMAML's
      gradient is exact only at the minimiser).
    imaml_lambda: the proximal strength lambda.
    cg_steps: conjugate-gradient iterations for the implicit gradient.

  Returns:
    A `MetaLearner` whose `meta_gradient` is the implicit meta-gradient.
  """
  if not imaml_lambda > 0:
    raise ValueError(f'imaml_lambda={imaml_lambda}: must be > 0')
  if cg_steps < 1:
    raise ValueError(f'cg_steps={cg_steps}: must be a positive integer')

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    anchor = jax.lax.stop_gradient(theta['model'])
    steps = inner_steps if num_steps is None else num_steps

    def regularised(v):
      proximal = sum(jnp.sum(jnp.square(a - b)) for a, b in
                     zip(jax.tree.leaves(v), jax.tree.leaves(anchor)))
      return common.split_loss(model, loss_fn, v, support) + 0.5 * imaml_lambda * proximal

    result = inner.inner_loop(regularised, anchor, inner_optimizer, steps, first_order=True)
    return Adapted(jax.lax.stop_gradient(result.params), result.losses)

  def meta_gradient(theta: Params, task: Task, rng: PRNGKey):
    adapted = adapt(theta, task.support, rng)
    phi = adapted.params
    query_loss, query_grad = jax.value_and_grad(lambda v: common.query_loss(
        loss_fn, apply, theta, common.with_support(model, v, task.support), task.query))(phi)
    support_loss = lambda v: common.split_loss(model, loss_fn, v, task.support)
    grads = implicit_meta_gradient(support_loss, phi, query_grad, imaml_lambda, cg_steps)
    return {'model': grads}, {'query_loss': query_loss,
                              'support_loss_before': adapted.support_losses[0]}

  learner_adapt, apply = common.support_statistics(model, adapt)
  return MetaLearner(name='imaml', init=lambda rng, task: common.init_model(model, rng, task),
                     adapt=learner_adapt, apply=apply, meta_gradient=meta_gradient)


@dataclasses.dataclass(frozen=True)
class IMAMLSettings(InnerLoop):
  """iMAML's gradient is exact at the inner solution: more steps than MAML's."""
  inner_steps: int = setting(5, 'inner-loop steps during meta-training', minimum=1)
  imaml_lambda: float = setting(1.0, 'strength lambda of the proximal term '
                                'lambda/2 ||phi - theta||^2', above=0)
  cg_steps: int = setting(5, 'conjugate-gradient iterations for the implicit meta-gradient',
                          minimum=1)


register(AlgorithmSpec(
    name='imaml', summary='iMAML: implicit gradients by conjugate gradient (Rajeswaran et al. 2019)',
    settings=IMAMLSettings,
    build=lambda s, model, loss_fn: imaml(
        model, loss_fn, inner_optimizer=s.inner_optimizer_at(), inner_steps=s.inner_steps,
        imaml_lambda=s.imaml_lambda, cg_steps=s.cg_steps)))
