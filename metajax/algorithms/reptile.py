"""Reptile: move the initialisation towards the adapted parameters.

The update direction of one task is theta - phi, so a meta-optimizer step of
plain SGD with step size epsilon gives theta <- theta + epsilon * mean(phi -
theta); epsilon = 1 is model averaging, theta <- mean(phi).

References:
  Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms",
  arXiv:1803.02999, 2018.
"""

import flax.linen as nn
import jax
import optax

from metajax.algorithms import common
from metajax import settings
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register
from metajax.learner import MetaLearner
from metajax.types import LossFn, Params, PRNGKey, Task


def reptile(model: nn.Module, loss_fn: LossFn, *,
            inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
            inner_steps: int = 5) -> MetaLearner:
  """Reptile with `inner_steps` steps of `inner_optimizer` on the support set.

  Args:
    model: a flax module.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_optimizer: any optax transformation (nothing is differentiated
      through the loop).
    inner_steps: inner steps per task (Reptile needs more than one).

  Returns:
    A `MetaLearner` whose `meta_gradient` is theta - phi.
  """
  adapt = common.full_adapt(model, loss_fn, inner_optimizer, inner_steps)
  learner_adapt, apply = common.support_statistics(model, adapt)

  def query_loss(theta, phi, task):
    return common.query_loss(loss_fn, apply, theta, common.with_support(model, phi, task.support),
                             task.query)

  def meta_gradient(theta: Params, task: Task, rng: PRNGKey):
    theta = jax.lax.stop_gradient(theta)
    adapted = adapt(theta, task.support, rng)
    direction = {'model': jax.tree.map(lambda t, p: t - p, theta['model'], adapted.params)}
    return direction, {'query_loss': query_loss(theta, adapted.params, task),
                       'support_loss_before': adapted.support_losses[0]}

  return MetaLearner(name='reptile', init=lambda rng, task: common.init_model(model, rng, task),
                     adapt=learner_adapt, apply=apply, meta_gradient=meta_gradient)


# As the sinusoid preset (experiments/configs/sinusoid_reptile.flags).
ReptileSettings = settings.with_defaults(InnerLoop, 'ReptileSettings', inner_steps=5, inner_lr=0.02)

register(AlgorithmSpec(
    name='reptile', summary='Reptile: theta moves towards the adapted weights (Nichol et al. 2018)',
    settings=ReptileSettings,
    build=lambda s, model, loss_fn: reptile(model, loss_fn, inner_optimizer=s.inner_optimizer_at(),
                                            inner_steps=s.inner_steps)))
