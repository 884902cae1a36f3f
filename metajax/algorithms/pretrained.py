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
import optax

from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register
from metajax.learner import MetaLearner
from metajax.types import LossFn, Params, PRNGKey, Task


def pretrained(model: nn.Module, loss_fn: LossFn, *,
               inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
               inner_steps: int = 1) -> MetaLearner:
  """Joint training on all tasks' samples, fine-tuning at test time.

  `model` and `loss_fn` are as in `maml`. The `MetaLearner` it returns trains
  on the plain loss of support and query pooled (`outer_loss`), and adapts to
  a test task by `inner_steps` steps of `inner_optimizer` on its support set.
  """

  def outer_loss(theta: Params, task: Task, rng: PRNGKey):
    del rng
    loss = common.split_loss(model, loss_fn, theta['model'],
                             common.concat_splits(task.support, task.query))
    return loss, {'query_loss': loss, 'support_loss_before': loss}

  adapt, apply = common.support_statistics(
      model, common.full_adapt(model, loss_fn, inner_optimizer, inner_steps),
      common.apply_model(model))
  return MetaLearner(name='pretrained', init=functools.partial(common.init_model, model),
                     adapt=adapt, apply=apply, outer_loss=outer_loss)


register(AlgorithmSpec(
    name='pretrained', summary='joint training on all tasks, fine-tuned at test time (MAML paper)',
    settings=InnerLoop,
    build=lambda s, model, loss_fn: pretrained(model, loss_fn, inner_optimizer=s.inner_optimizer_at(),
                                               inner_steps=s.inner_steps)))
