"""MAML and its relatives: first-order MAML, ANIL and Meta-SGD.

All four adapt by the shared differentiable inner loop (`metajax.inner`) and
take `jax.grad` of the query loss after adaptation; they differ in what is
adapted, what is meta-learned and whether the inner gradient is a constant.

References:
  Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
  Deep Networks", ICML 2017 (MAML, first-order MAML).
  Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards
  Understanding the Effectiveness of MAML", ICLR 2020 (ANIL).
  Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
  Learning", arXiv:1707.09835, 2017.
"""

import functools

import flax.linen as nn
import jax
import optax

from metajax import inner
from metajax.learner import MetaLearner, init_model, split_loss, with_head
from metajax.types import LossFn, Params, PRNGKey, Split, Task


def predict_after(model: nn.Module, adapt):
  """`predict`: the model's outputs on `query_x` after `adapt` on the support set."""

  def predict(theta, support, query_x, rng, num_steps=None):
    return model.apply(adapt(theta, support, rng, num_steps), query_x)

  return predict


def _learner(name, model, loss_fn, adapt, init=None, **kwargs) -> MetaLearner:
  """Completes a learner from its `adapt`: predict and the MAML outer loss."""

  def outer_loss(theta: Params, task: Task, rng: PRNGKey):
    phi, losses = adapt(theta, task.support, rng, None, return_losses=True)
    loss = split_loss(model, loss_fn, phi, task.query)
    return loss, {'query_loss': loss, 'support_loss_before': losses[0]}

  return MetaLearner(
      name=name,
      init=init or functools.partial(init_model, model),
      adapt=adapt,
      predict=predict_after(model, adapt),
      outer_loss=outer_loss,
      **kwargs)


def full_adapt(model: nn.Module, loss_fn: LossFn, optimizer, inner_steps: int,
               *, first_order: bool = False, remat: bool = False,
               backprop_steps=None):
  """`adapt` that runs the inner loop on every model parameter."""

  def adapt(theta, support: Split, rng, num_steps=None, return_losses=False):
    del rng
    steps = inner_steps if num_steps is None else num_steps
    result = inner.inner_loop(
        lambda v: split_loss(model, loss_fn, v, support), theta['model'],
        optimizer, steps, first_order=first_order, remat=remat,
        backprop_steps=backprop_steps)
    return (result.params, result.losses) if return_losses else result.params

  return adapt


def maml(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
         inner_steps: int = 1, inner_optimizer: str = 'sgd',
         first_order: bool = False, remat: bool = False,
         backprop_steps=None) -> MetaLearner:
  """Model-agnostic meta-learning.

  theta <- theta - beta * grad_theta sum_tasks L_query(adapt(theta, support)).

  Args:
    model: a flax module, applied as `model.apply(variables, x)`.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_lr: step size of the inner optimizer.
    inner_steps: inner steps during meta-training.
    inner_optimizer: 'sgd', 'momentum' or 'adam' (differentiated through).
    first_order: drop the second-order terms (first-order MAML).
    remat: rematerialise inner steps in the backward pass.
    backprop_steps: differentiate through only the last k inner steps
      (`inner.inner_loop`); None: all of them.

  Returns:
    A `MetaLearner`.
  """
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)
  adapt = full_adapt(model, loss_fn, optimizer, inner_steps,
                     first_order=first_order, remat=remat,
                     backprop_steps=backprop_steps)
  return _learner('fomaml' if first_order else 'maml', model, loss_fn, adapt)


def fomaml(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
           inner_steps: int = 1, inner_optimizer: str = 'sgd',
           remat: bool = False) -> MetaLearner:
  """First-order MAML: MAML with the inner gradients held constant."""
  return maml(model, loss_fn, inner_lr=inner_lr, inner_steps=inner_steps,
              inner_optimizer=inner_optimizer, first_order=True, remat=remat)


def anil(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
         inner_steps: int = 1, inner_optimizer: str = 'sgd',
         first_order: bool = False, remat: bool = False,
         backprop_steps=None) -> MetaLearner:
  """Almost No Inner Loop: the inner loop adapts only the head.

  The model must have a submodule `head` and the methods `embed(x)` and
  `classify(features)` (every model in `metajax.models` has them). The support
  features are computed once; only the head runs in the inner loop. The body
  still gets its meta-gradient, through the support and query features.
  """
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)

  def adapt(theta, support: Split, rng, num_steps=None, return_losses=False):
    del rng
    variables = theta['model']
    steps = inner_steps if num_steps is None else num_steps
    features = model.apply(variables, support.x, method='embed')

    def head_loss(head):
      logits = model.apply(with_head(variables, head), features,
                           method='classify')
      return loss_fn(logits, support.y)

    result = inner.inner_loop(head_loss, variables['params']['head'],
                              optimizer, steps, first_order=first_order,
                              remat=remat, backprop_steps=backprop_steps)
    phi = with_head(variables, result.params)
    return (phi, result.losses) if return_losses else phi

  return _learner('anil', model, loss_fn, adapt)


def metasgd(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
            inner_steps: int = 1, inner_optimizer: str = 'sgd',
            remat: bool = False, backprop_steps=None) -> MetaLearner:
  """Meta-SGD: a meta-learned learning rate for every parameter.

  phi = theta - alpha * direction, with `alpha` (a pytree shaped like the
  parameters, initialised to `inner_lr`) meta-learned beside theta. With the
  'sgd' inner optimizer the direction is the gradient, as in the paper; with
  'momentum' or 'adam' it is their update direction.
  """

  def init(rng, example_task):
    theta = init_model(model, rng, example_task)
    theta['inner_lr'] = jax.tree.map(
        lambda p: jax.numpy.full_like(p, inner_lr), theta['model'])
    return theta

  def adapt(theta, support: Split, rng, num_steps=None, return_losses=False):
    del rng
    steps = inner_steps if num_steps is None else num_steps
    optimizer = optax.chain(inner.inner_optimizer(inner_optimizer, 1.0),
                            inner.scale_by_tree(theta['inner_lr']))
    result = inner.inner_loop(
        lambda v: split_loss(model, loss_fn, v, support), theta['model'],
        optimizer, steps, remat=remat, backprop_steps=backprop_steps)
    return (result.params, result.losses) if return_losses else result.params

  return _learner('metasgd', model, loss_fn, adapt, init=init)
