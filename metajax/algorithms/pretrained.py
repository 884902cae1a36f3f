"""The "pretrained" baseline of the MAML paper.

One network is trained on the pooled samples of many tasks with no inner loop
(ordinary joint training; with a meta-batch of tasks per step), and at test
time fine-tuned on a task's support set with the same inner loop as MAML.

References:
  Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
  Deep Networks", ICML 2017, section 5.1 ("pretrained" in figure 2).
"""

import functools

import flax.linen as nn

from metajax import inner
from metajax.algorithms.maml import full_adapt, predict_after
from metajax.learner import MetaLearner, concat_splits, init_model, split_loss
from metajax.types import LossFn, Params, PRNGKey, Task


def pretrained(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
               inner_steps: int = 1, inner_optimizer: str = 'sgd',
               remat: bool = False) -> MetaLearner:
  """Joint training on all tasks' samples, fine-tuning at test time.

  Args:
    model: a flax module.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_lr: fine-tuning step size at test time.
    inner_steps: fine-tuning steps at test time.
    inner_optimizer: fine-tuning optimizer.
    remat: unused; accepted so that every learner takes the same arguments.

  Returns:
    A `MetaLearner` whose outer loss is the plain loss on support and query.
  """
  del remat
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)
  adapt = full_adapt(model, loss_fn, optimizer, inner_steps)

  def outer_loss(theta: Params, task: Task, rng: PRNGKey):
    del rng
    loss = split_loss(model, loss_fn, theta['model'],
                      concat_splits(task.support, task.query))
    return loss, {'query_loss': loss, 'support_loss_before': loss}

  return MetaLearner(name='pretrained',
                     init=functools.partial(init_model, model), adapt=adapt,
                     predict=predict_after(model, adapt), outer_loss=outer_loss)
