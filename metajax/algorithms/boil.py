"""BOIL: Body Only update in Inner Loop, the reverse of ANIL.

The inner loop adapts every parameter but the head's; the head is frozen
during adaptation (its inner learning rate is 0) and still meta-learned in
the outer loop. Oh et al. argue that this forces adaptation to change the
representation rather than reuse it.

Reference:
  Oh, Yoo, Kim & Yun, "BOIL: Towards Representation Change for Few-shot
  Learning", ICLR 2021.
"""

from typing import Optional

import flax.linen as nn
import optax

from metajax import inner
from metajax.algorithms import common
from metajax.algorithms.maml import DATASET_DEFAULTS, TruncatableSettings
from metajax.algorithms.registry import AlgorithmSpec, register
from metajax.learner import Adapted, MetaLearner
from metajax.types import LossFn, Split


def boil(model: nn.Module, loss_fn: LossFn, *,
         inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
         inner_steps: int = 1, remat: bool = False,
         backprop_steps: Optional[int] = None) -> MetaLearner:
  """MAML whose inner loop adapts the body and leaves the head as meta-learned.

  Args are those of `maml`; the model must have a submodule `head` (every
  model in `metajax.models` has one).
  """

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    variables = theta['model']
    head = variables['params']['head']
    with_body = lambda body: {**variables, 'params': {**body, 'head': head}}
    body = {k: v for k, v in variables['params'].items() if k != 'head'}
    result = inner.inner_loop(
        lambda b: common.split_loss(model, loss_fn, with_body(b), support), body,
        inner_optimizer, inner_steps if num_steps is None else num_steps, remat=remat,
        backprop_steps=backprop_steps)
    return Adapted(with_body(result.params), result.losses)

  return common.query_loss_learner('boil', model, loss_fn, adapt)


register(AlgorithmSpec(
    name='boil', summary='BOIL: only the body adapts, the head stays (Oh et al. 2021)',
    settings=TruncatableSettings, dataset_defaults=DATASET_DEFAULTS,
    build=lambda s, model, loss_fn: boil(
        model, loss_fn, inner_optimizer=s.inner_optimizer_at(), inner_steps=s.inner_steps,
        remat=s.remat, backprop_steps=s.backprop_steps)))
