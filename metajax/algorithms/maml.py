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
  Kao, Chiu & Chen, "MAML is a Noisy Contrastive Learner in Classification",
  ICLR 2022 (the zeroing trick: `zero_head`).
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import optax

from metajax import inner, losses
from metajax.algorithms import common
from metajax.algorithms.registry import (AlgorithmSpec, InnerLoop, backprop_steps_setting,
                                         register, remat_setting, zero_head_setting)
from metajax.learner import Adapted, MetaLearner
from metajax.types import LossFn, Split


def maml(model: nn.Module, loss_fn: LossFn, *,
         inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
         inner_steps: int = 1, first_order: bool = False, remat: bool = False,
         backprop_steps: Optional[int] = None, zero_head: bool = False) -> MetaLearner:
  """Model-agnostic meta-learning.

  theta <- theta - beta * grad_theta sum_tasks L_query(adapt(theta, support)).

  Args:
    model: a flax module, applied as `model.apply(variables, x)`.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_optimizer: any optax transformation; it is differentiated through.
    inner_steps: inner steps during meta-training.
    first_order: drop the second-order terms (first-order MAML).
    remat: rematerialise inner steps in the backward pass.
    backprop_steps: differentiate through only the last k inner steps
      (`inner.inner_loop`); None: all of them.
    zero_head: start every inner loop from a zero head (the model's submodule
      `head`), the zeroing trick of Kao et al.: every class starts equal, so
      the initial weights carry no class order that a task's arbitrary labels
      would have to undo. theta's head is initialised to zero and stays there
      (its meta-gradient is zero); the body is meta-learned as before.

  Returns:
    A `MetaLearner`.
  """
  adapt = common.full_adapt(model, loss_fn, inner_optimizer, inner_steps,
                            first_order=first_order, remat=remat,
                            backprop_steps=backprop_steps)
  init = None
  if zero_head:
    init, adapt = zeroed_head(model, adapt)
  return common.query_loss_learner('fomaml' if first_order else 'maml', model, loss_fn, adapt,
                                   init=init)


def zeroed_head(model: nn.Module, adapt):
  """`(init, adapt)` whose inner loops start from a zero head (`maml(zero_head=True)`)."""

  def zero(theta):
    return {**theta, 'model': common.zero_head(theta['model'])}

  def init(rng, example_task):
    return zero(common.init_model(model, rng, example_task))

  def adapt_from_zero(theta, support: Split, rng, num_steps=None) -> Adapted:
    return adapt(zero(theta), support, rng, num_steps)

  return init, adapt_from_zero


def fomaml(model: nn.Module, loss_fn: LossFn, *,
           inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
           inner_steps: int = 1, remat: bool = False, zero_head: bool = False) -> MetaLearner:
  """First-order MAML: MAML with the inner gradients held constant."""
  return maml(model, loss_fn, inner_optimizer=inner_optimizer, inner_steps=inner_steps,
              first_order=True, remat=remat, zero_head=zero_head)


def anil(model: nn.Module, loss_fn: LossFn, *,
         inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
         inner_steps: int = 1, first_order: bool = False, remat: bool = False,
         backprop_steps: Optional[int] = None) -> MetaLearner:
  """Almost No Inner Loop: the inner loop adapts only the head.

  The model must have a submodule `head` and the methods `embed(x)` and
  `classify(features)` (every model in `metajax.models` has them). The support
  features are computed once; only the head runs in the inner loop. The body
  still gets its meta-gradient, through the support and query features.
  """

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    variables = theta['model']
    steps = inner_steps if num_steps is None else num_steps
    features = common.run_model(model, variables, support.x, support.mask, 'embed')

    def head_loss(head):
      logits = model.apply(common.with_head(variables, head), features, method='classify')
      return losses.masked_mean(loss_fn, logits, support.y, support.mask)

    result = inner.inner_loop(head_loss, variables['params']['head'], inner_optimizer, steps,
                              first_order=first_order, remat=remat,
                              backprop_steps=backprop_steps)
    return Adapted(common.with_head(variables, result.params), result.losses)

  return common.query_loss_learner('anil', model, loss_fn, adapt)


def metasgd(model: nn.Module, loss_fn: LossFn, *,
            inner_optimizer: optax.GradientTransformation = optax.sgd(1.0),
            inner_lr: float = 0.01, inner_steps: int = 1, remat: bool = False,
            backprop_steps: Optional[int] = None) -> MetaLearner:
  """Meta-SGD: a meta-learned learning rate for every parameter.

  phi = theta + alpha * direction, with `alpha` (a pytree shaped like the
  parameters, initialised to `inner_lr`, under theta['inner_lr'])
  meta-learned beside theta, applied by `inner.scale_by_learned_rates`. The
  direction is `inner_optimizer`'s update: `optax.sgd(1.0)` gives minus the
  gradient, as in the paper; `optax.adam(1.0, eps_root=1e-12)` Adam's.
  """

  def init(rng, example_task):
    theta = common.init_model(model, rng, example_task)
    theta['inner_lr'] = jax.tree.map(lambda p: jax.numpy.full_like(p, inner_lr),
                                     theta['model'])
    return theta

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    optimizer = optax.chain(inner_optimizer, inner.scale_by_learned_rates(theta['inner_lr']))
    return common.full_adapt(model, loss_fn, optimizer, inner_steps, remat=remat,
                             backprop_steps=backprop_steps)(theta, support, rng, num_steps)

  return common.query_loss_learner('metasgd', model, loss_fn, adapt, init=init)


@dataclasses.dataclass(frozen=True)
class RematSettings(InnerLoop):
  remat: bool = remat_setting()


@dataclasses.dataclass(frozen=True)
class TruncatableSettings(RematSettings):
  """ANIL's, BOIL's and Meta-SGD's settings (Meta-SGD: `inner_lr` is the rates' start)."""
  backprop_steps: Optional[int] = backprop_steps_setting()


@dataclasses.dataclass(frozen=True)
class MAMLSettings(TruncatableSettings):
  zero_head: bool = zero_head_setting()


@dataclasses.dataclass(frozen=True)
class FOMAMLSettings(RematSettings):
  zero_head: bool = zero_head_setting()


# The MAML paper's inner loops: sinusoid 0.01 x 1 step, Omniglot 0.4 x 1,
# miniImageNet 0.01 x 5 (Finn et al. 2017, section 5). On Omniglot the rest is
# the paper's 5-way 1-shot protocol sized for a 2-core CPU: 8 tasks of 5 queries
# per class, 8,000 meta-steps (first order: 6,000), tested after 1 and 3 steps.
OMNIGLOT_CPU = {'inner_lr': 0.4, 'query': 5, 'eval_query': 15, 'meta_batch_size': 8,
                'num_steps': 8000, 'checkpoint_every': 250, 'log_every': 50,
                'eval_inner_steps': (1, 3)}
DATASET_DEFAULTS = {'omniglot': OMNIGLOT_CPU, 'miniimagenet': {'inner_steps': 5}}


def _register(name, summary, settings, build, dataset_defaults=DATASET_DEFAULTS):
  register(AlgorithmSpec(name=name, summary=summary, settings=settings, build=build,
                         dataset_defaults=dataset_defaults))


def _inner(s):
  return {'inner_optimizer': s.inner_optimizer_at(), 'inner_steps': s.inner_steps,
          'remat': s.remat}


_register('maml', 'MAML, second order (Finn et al. 2017)', MAMLSettings,
          lambda s, model, loss_fn: maml(model, loss_fn, backprop_steps=s.backprop_steps,
                                         zero_head=s.zero_head, **_inner(s)))
_register('fomaml', 'first-order MAML', FOMAMLSettings,
          lambda s, model, loss_fn: fomaml(model, loss_fn, zero_head=s.zero_head, **_inner(s)),
          {**DATASET_DEFAULTS, 'omniglot': {**OMNIGLOT_CPU, 'num_steps': 6000}})
_register('anil', 'ANIL: only the head adapts (Raghu et al. 2020)', TruncatableSettings,
          lambda s, model, loss_fn: anil(model, loss_fn, backprop_steps=s.backprop_steps,
                                         **_inner(s)))
_register('metasgd', 'Meta-SGD: meta-learned per-parameter rates, from --inner_lr',
          TruncatableSettings,
          lambda s, model, loss_fn: metasgd(
              model, loss_fn, inner_optimizer=s.inner_optimizer_at(1.0), inner_lr=s.inner_lr,
              inner_steps=s.inner_steps, remat=s.remat, backprop_steps=s.backprop_steps))
