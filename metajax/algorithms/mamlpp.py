"""MAML++: MAML with the training fixes of "How to train your MAML".

Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019. Each piece
is switched by its own argument, so that its effect can be measured; with all
of them off the learner is second-order MAML:

- `msl_steps > 0`, the multi-step loss (MSL): the meta-loss is a weighted sum
  of the query losses after every inner step, the weights annealed over the
  first `msl_steps` meta-steps from uniform to the last step alone
  (`multi_step_weights`, the paper's code's schedule, here per meta-step
  instead of per epoch); after that, the last step's loss alone.
- `per_step_bn` (BNWB): each inner step k normalises with its own batch-norm
  scale and bias; they are meta-learned, not adapted. The query loss after
  step k+1 uses step k's. Batch norm always uses the statistics of the batch
  at hand (`models.BatchStatNorm`), so the paper's per-step running
  statistics (BNRS) have nothing to keep.
- `learn_inner_lr` (LSLR): one inner learning rate per parameter tensor and
  inner step, meta-learned from `inner_lr`: the inner update of step k is
  `optax.chain(inner_optimizer, inner.scale_by_learned_rates(rates_k))`.
  Off: every step uses `inner_lr`.
- `first_order_steps > 0`, derivative-order annealing (DA): first-order
  meta-gradients for the first `first_order_steps` meta-steps, second-order
  after. The phase is picked with `lax.switch` on the meta-step, so a
  first-order step costs a first-order step.
- cosine annealing of the meta learning rate is the meta-optimizer's
  (`--lr_schedule=cosine --min_meta_lr=...`), not the learner's.
- `zero_head` (not in the paper; Kao, Chiu & Chen, ICLR 2022, as
  `maml(zero_head=True)`): every inner loop starts from a zero head; theta's
  head is zero and stays there. Its learned rates still apply to its updates.

Batch-norm layers are recognised in the model's parameters as the
sub-dictionaries holding exactly `scale` and `bias` (every metajax model's
`BatchStatNorm`). With `per_step_bn`, theta['model'] holds them with a leading
axis of `inner_steps`; the adapted variables (phi) hold those of the last step
taken, so `apply` is the model's own. An evaluation with more inner steps than
training reuses the last step's rates and batch-norm parameters.
"""

import dataclasses

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import optax

from metajax import inner
from metajax.algorithms import common
from metajax.algorithms.registry import (AlgorithmSpec, InnerLoop, register, remat_setting,
                                         zero_head_setting)
from metajax.settings import setting
from metajax.learner import Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task


def multi_step_weights(step: Array, num_steps: int, anneal_steps: int) -> Array:
  """[num_steps] weights of the query losses after each inner step, at meta-step `step`.

  Uniform (1/n) at step 0; the weights of the steps before the last fall by
  1/n per `anneal_steps` meta-steps to at least 0.03/n, the last one's rises
  to keep the sum at 1; from `anneal_steps` on, only the last step counts.
  """
  last = jax.nn.one_hot(num_steps - 1, num_steps)
  if anneal_steps <= 0 or num_steps == 1:
    return last
  n = num_steps
  progress = jnp.asarray(step, jnp.float32) / anneal_steps
  floor = 0.03 / n
  early = jnp.maximum(1.0 / n - progress / n, floor)
  final = jnp.minimum(1.0 / n + progress * (n - 1) / n, 1.0 - (n - 1) * floor)
  weights = jnp.concatenate([jnp.full((n - 1,), early), final[None]])
  return jnp.where(step >= anneal_steps, last, weights)


def _norm_paths(params: Params) -> set[tuple[str, ...]]:
  """Paths of the batch-norm parameters: leaves of dicts holding exactly scale and bias."""
  flat = traverse_util.flatten_dict(params)
  parents = {}
  for path in flat:
    parents.setdefault(path[:-1], set()).add(path[-1])
  return {p for p in flat if parents[p[:-1]] == {'scale', 'bias'}}


def mamlpp(model: nn.Module, loss_fn: LossFn, *,
           inner_optimizer: optax.GradientTransformation = optax.sgd(1.0),
           inner_lr: float = 0.1, inner_steps: int = 5, msl_steps: int = 0,
           first_order_steps: int = 0, per_step_bn: bool = True, learn_inner_lr: bool = True,
           remat: bool = False, zero_head: bool = False) -> MetaLearner:
  """MAML++ (see the module docstring for each piece).

  Args:
    model: a flax module; its batch-norm layers as in the module docstring.
    loss_fn: `(predictions, targets) -> scalar`.
    inner_optimizer: the inner update's direction at learning rate 1
      (`optax.sgd(1.0)`: minus the gradient), scaled by the step's rates.
    inner_lr: the inner learning rate (the initial one when learned).
    inner_steps: inner steps during meta-training (S).
    msl_steps: meta-steps over which the multi-step loss anneals (0: off).
    first_order_steps: first-order meta-steps before second order (0: none).
    per_step_bn: batch-norm scale and bias per inner step.
    learn_inner_lr: meta-learn one rate per parameter tensor and inner step.
    remat: rematerialise inner steps in the backward pass.
    zero_head: start every inner loop from a zero head (the submodule `head`).

  Returns:
    A `MetaLearner` whose `outer_loss(theta, task, rng, step)` takes the meta-step.
  """
  steps_of = lambda num_steps: inner_steps if num_steps is None else num_steps

  def split(variables):
    """(adapted params, {norm path: [S, ...]} or {})."""
    flat = traverse_util.flatten_dict(variables['params'])
    norms = _norm_paths(variables['params']) if per_step_bn else set()
    adapted = traverse_util.unflatten_dict({p: v for p, v in flat.items() if p not in norms})
    return adapted, {p: flat[p] for p in norms}

  def merge(variables, adapted, norms_k):
    flat = {**traverse_util.flatten_dict(adapted), **norms_k}
    return {**variables, 'params': traverse_util.unflatten_dict(flat)}

  def init(rng, example_task: Task) -> Params:
    theta = common.init_model(model, rng, example_task)
    if zero_head:
      theta['model'] = common.zero_head(theta['model'])
    if per_step_bn:
      flat = traverse_util.flatten_dict(theta['model']['params'])
      for path in _norm_paths(theta['model']['params']):
        flat[path] = jnp.broadcast_to(flat[path], (inner_steps,) + flat[path].shape)
      theta['model'] = {**theta['model'], 'params': traverse_util.unflatten_dict(flat)}
    if learn_inner_lr:
      adapted, _ = split(theta['model'])
      theta['inner_lr'] = jax.tree.map(lambda p: jnp.full((inner_steps,), inner_lr, p.dtype),
                                       adapted)
    return theta

  def per_step_inputs(theta, num_steps):
    """Row k: step k's batch-norm parameters and rates (k past S-1 reuses S-1's)."""
    index = jnp.minimum(jnp.arange(max(num_steps, 1)), inner_steps - 1)
    _, norms = split(theta['model'])
    rates = (theta['inner_lr'] if learn_inner_lr else
             jax.tree.map(lambda p: jnp.full((inner_steps,), inner_lr, p.dtype),
                          split(theta['model'])[0]))
    return {'norms': {'/'.join(p): v[index] for p, v in norms.items()},
            'rates': jax.tree.map(lambda r: r[index], rates)}

  def variables_at(theta, adapted, x) -> Params:
    norms = {tuple(k.split('/')): v for k, v in x['norms'].items()}
    return merge(theta['model'], adapted, norms)

  def run_inner(theta, support: Split, num_steps, first_order=False, observe=None):
    adapted, _ = split(theta['model'])
    if zero_head:
      adapted = common.zero_head({'params': adapted})['params']
    xs = per_step_inputs(theta, num_steps)
    result = inner.inner_loop(
        lambda phi, x: common.split_loss(model, loss_fn, variables_at(theta, phi, x), support),
        adapted,
        lambda x: optax.chain(inner_optimizer, inner.scale_by_learned_rates(x['rates'])),
        num_steps, first_order=first_order, remat=remat, per_step=xs,
        observe=None if observe is None else lambda phi, x: observe(variables_at(theta, phi, x)))
    last = jax.tree.map(lambda v: v[max(num_steps, 1) - 1], xs)
    return variables_at(theta, result.params, last), result

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    del rng
    phi, result = run_inner(theta, support, steps_of(num_steps))
    return Adapted(phi, result.losses)

  adapt_s, apply_s = common.support_statistics(model, adapt)

  def query_loss(theta, variables, task: Task) -> Array:
    phi = common.with_support(model, variables, task.support)
    return common.query_loss(loss_fn, apply_s, theta, phi, task.query)

  def phase_loss(first_order: bool, multi_step: bool, step):
    def loss(theta: Params, task: Task):
      observe = (lambda v: query_loss(theta, v, task)) if multi_step else None
      phi, result = run_inner(theta, task.support, inner_steps, first_order, observe)
      if multi_step:
        weights = multi_step_weights(step, inner_steps, msl_steps).astype(result.observed.dtype)
        final = result.observed[-1]
        total = jnp.sum(weights * result.observed)
      else:
        final = total = query_loss(theta, phi, task)
      return total, {'query_loss': final, 'support_loss_before': result.losses[0]}
    return loss

  def outer_loss(theta: Params, task: Task, rng: PRNGKey, step: Array):
    del rng
    orders = (True, False) if first_order_steps > 0 else (False,)
    multi = (True, False) if msl_steps > 0 and inner_steps > 1 else (False,)
    branches = [phase_loss(fo, ms, step) for fo in orders for ms in multi]
    if len(branches) == 1:
      return branches[0](theta, task)
    index = 0
    if len(orders) == 2:
      index = jnp.where(step < first_order_steps, 0, 1) * len(multi)
    if len(multi) == 2:
      index = index + jnp.where(step < msl_steps, 0, 1)
    return jax.lax.switch(index, branches, theta, task)

  return MetaLearner(name='mamlpp', init=init, adapt=adapt_s, apply=apply_s,
                     outer_loss=outer_loss, takes_step=True)


@dataclasses.dataclass(frozen=True)
class MAMLPPSettings(InnerLoop):
  """MAML++'s settings; each of its pieces can be switched off.

  The paper's Omniglot settings are the defaults: 5 inner steps of 0.1
  (learned from there), multi-step loss over 10 epochs of 500 meta-steps,
  first order for 50 epochs.
  """
  inner_steps: int = setting(5, 'inner-loop steps during meta-training', minimum=1)
  inner_lr: float = setting(0.1, 'inner-loop learning rate (the learned rates\' start with '
                            '--learn_inner_lr)', above=0)
  remat: bool = remat_setting()
  msl_steps: int = setting(5000, 'the multi-step loss (query losses after every inner step) '
                           'anneals to the last step over N meta-steps (0: the last step only)',
                           minimum=0)
  first_order_steps: int = setting(25000, 'first-order meta-gradients for the first N '
                                   'meta-steps, then second order (0: second order throughout)',
                                   minimum=0)
  per_step_bn: bool = setting(True, 'a batch-norm scale and bias per inner step, meta-learned')
  learn_inner_lr: bool = setting(True, 'meta-learn one inner rate per parameter tensor and '
                                 'inner step (from --inner_lr)')
  zero_head: bool = zero_head_setting()


def _build(s: MAMLPPSettings, model, loss_fn):
  return mamlpp(model, loss_fn, inner_optimizer=s.inner_optimizer_at(1.0), inner_lr=s.inner_lr,
                inner_steps=s.inner_steps, msl_steps=s.msl_steps,
                first_order_steps=s.first_order_steps, per_step_bn=s.per_step_bn,
                learn_inner_lr=s.learn_inner_lr, remat=s.remat, zero_head=s.zero_head)


register(AlgorithmSpec(
    name='mamlpp', summary='MAML++ (Antoniou et al. 2019): multi-step loss, per-step batch '
    'norm and learned per-layer per-step inner rates, first order then second order',
    settings=MAMLPPSettings, build=_build, defaults={'eval_inner_steps': (5,)},
    # Omniglot 5-way 1-shot sized for a 2-core CPU: 8 tasks of 5 queries per class,
    # 2,400 meta-steps, both annealings shortened in proportion, cosine decay.
    dataset_defaults={'omniglot': {
        'query': 5, 'eval_query': 15, 'msl_steps': 200, 'first_order_steps': 800,
        'meta_batch_size': 8, 'lr_schedule': 'cosine', 'min_meta_lr': 1e-5, 'num_steps': 2400,
        'checkpoint_every': 300, 'log_every': 50, 'eval_every': 300, 'val_tasks': 50}}))
