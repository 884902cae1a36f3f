"""Reptile: move the initialisation towards the adapted parameters.

The update direction of one task is theta - phi, so a meta-optimizer step of
plain SGD with step size epsilon gives theta <- theta + epsilon * mean(phi -
theta); epsilon = 1 is model averaging, theta <- mean(phi).

References:
  Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms",
  arXiv:1803.02999, 2018.
"""

import functools

import flax.linen as nn
import jax

from metajax import inner
from metajax.algorithms.maml import full_adapt, predict_after
from metajax.learner import MetaLearner, init_model, split_loss
from metajax.types import LossFn, Params, PRNGKey, Task


def reptile(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
            inner_steps: int = 5, inner_optimizer: str = 'sgd',
            remat: bool = False) -> MetaLearner:
  """Reptile with `inner_steps` steps of `inner_optimizer` on the support set.

  Args:
    model: a flax module.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_lr: inner step size.
    inner_steps: inner steps per task (Reptile needs more than one).
    inner_optimizer: 'sgd', 'momentum' or 'adam'.
    remat: unused by the update (nothing is differentiated through the
      loop); accepted so that every learner takes the same arguments.

  Returns:
    A `MetaLearner` whose `meta_gradient` is theta - phi.
  """
  del remat
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)
  adapt = full_adapt(model, loss_fn, optimizer, inner_steps)

  def meta_gradient(theta: Params, task: Task, rng: PRNGKey):
    theta = jax.lax.stop_gradient(theta)
    phi, losses = adapt(theta, task.support, rng, return_losses=True)
    direction = {'model': jax.tree.map(lambda t, p: t - p, theta['model'], phi)}
    query_loss = split_loss(model, loss_fn, phi, task.query)
    return direction, {'query_loss': query_loss,
                       'support_loss_before': losses[0]}

  return MetaLearner(name='reptile', init=functools.partial(init_model, model),
                     adapt=adapt, predict=predict_after(model, adapt),
                     meta_gradient=meta_gradient)
