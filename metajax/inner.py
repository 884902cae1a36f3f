"""The differentiable inner loop shared by the optimisation-based learners.

Adaptation is `num_steps` steps of any optax `GradientTransformation` on the
support loss, written as a `lax.scan` so that the whole trajectory is one
differentiable computation: `jax.grad` through it gives the exact
(second-order) meta-gradient, including through the state of stateful inner
optimizers such as momentum and Adam.

Adam as an inner optimizer needs `eps_root > 0` (`optax.adam(lr, eps_root=1e-12)`,
what the experiment config builds for `--inner_optimizer=adam`): with
`eps_root = 0` the derivative of `sqrt(nu)` is infinite wherever a gradient
entry is exactly zero (a dead ReLU, say), which puts NaNs into the
second-order meta-gradient.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from metajax.types import Array, Params


def scale_by_learned_rates(rates: Params) -> optax.GradientTransformation:
  """Multiplies each update leaf by the matching leaf of `rates`.

  Meta-SGD's per-parameter learning rates as an optax transformation: `rates`
  is meta-learned state (a leaf of theta), so the transformation is rebuilt
  from theta inside each adaptation and the meta-gradient flows into it.
  `optax.chain(direction, scale_by_learned_rates(rates))` steps along any
  optax direction (`optax.sgd(1.0)`: minus the gradient, as in the paper).
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(jnp.multiply, rates, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


class InnerResult(NamedTuple):
  params: Params  # phi, the adapted parameters
  losses: Array   # [max(num_steps, 1)] loss before each step (num_steps=0: at params)
  observed: Any = None  # [num_steps] `observe` after each step, when given


def inner_loop(
    loss_fn: Callable[..., Array],
    params: Params,
    optimizer: Union[optax.GradientTransformation,
                     Callable[[Any], optax.GradientTransformation]],
    num_steps: int,
    *,
    first_order: bool = False,
    remat: bool = False,
    backprop_steps: Optional[int] = None,
    per_step: Any = None,
    observe: Optional[Callable[..., Any]] = None,
) -> InnerResult:
  """Runs `num_steps` steps of `optimizer` on `loss_fn`, starting at `params`.

  phi_0 = params;  g_k = grad loss_fn(phi_k);
  (u_k, s_{k+1}) = optimizer.update(g_k, s_k, phi_k);  phi_{k+1} = phi_k + u_k.

  Args:
    loss_fn: the support loss as a function of the adapted parameters
      (`loss_fn(phi, x_k)` with `per_step`).
    params: the starting point theta (a pytree).
    optimizer: any optax transformation; it is differentiated through. With
      `per_step` it may also be a function `x_k -> transformation` whose
      state keeps one structure over the steps (e.g. `optax.chain(direction,
      scale_by_learned_rates(rates_k))`: MAML++'s per-step learning rates).
    num_steps: static number of steps (0 returns `params` unchanged).
    first_order: treat each inner gradient as a constant
      (`stop_gradient`), which gives first-order MAML's meta-gradient.
    remat: rematerialise each step in the backward pass (`jax.checkpoint`),
      trading compute for memory: the backward pass keeps only each step's
      parameters and optimizer state, not its activations.
    backprop_steps: differentiate through only the last `backprop_steps`
      steps (truncated backpropagation). The earlier steps are first-order:
      their gradients are constants, so d phi_{n-k} / d theta is the identity.
      None (or >= num_steps): through every step; 0: first-order throughout.
    per_step: what changes from step to step: a pytree whose leaves have a
      leading axis of length max(num_steps, 1); step k reads row k (x_k).
      None: every step is the same.
    observe: `observe(phi_{k+1}, x_k)`, recorded after each step (e.g. the
      query loss after each step, for MAML++'s multi-step loss).

  Returns:
    `InnerResult(params=phi, losses=loss before each step, observed)`; with
    `num_steps=0`, `losses` holds the one loss at `params`.
  """
  if num_steps < 0:
    raise ValueError(f'num_steps={num_steps}: must be >= 0')
  if backprop_steps is not None and backprop_steps < 0:
    raise ValueError(f'backprop_steps={backprop_steps}: must be >= 0')
  exact = num_steps if backprop_steps is None else min(backprop_steps, num_steps)
  if first_order:
    exact = 0
  if per_step is None:
    loss_at, row = (lambda phi, x: loss_fn(phi)), (lambda start, stop: None)
  else:
    loss_at = loss_fn
    row = lambda start, stop: jax.tree.map(lambda v: v[start:stop], per_step)
  transform = (optimizer if not isinstance(optimizer, optax.GradientTransformation)
               else lambda x: optimizer)

  def make_step(constant_gradients):
    def step(carry, x):
      phi, opt_state = carry
      loss, grads = jax.value_and_grad(loss_at)(phi, x)
      if constant_gradients:
        grads = jax.lax.stop_gradient(grads)
      updates, opt_state = transform(x).update(grads, opt_state, phi)
      phi = optax.apply_updates(phi, updates)
      return (phi, opt_state), (loss, None if observe is None else observe(phi, x))
    return jax.checkpoint(step) if remat else step

  first = jax.tree.map(lambda v: v[0], row(0, 1))
  carry = (params, transform(first).init(params))
  losses, observed = [], []
  start = 0
  for constant, length in ((True, num_steps - exact), (False, exact)):
    if length:
      carry, (part, seen) = jax.lax.scan(make_step(constant), carry, row(start, start + length),
                                         length=length)
      losses.append(part)
      observed.append(seen)
      start += length
  if not losses:
    return InnerResult(params, loss_at(params, first)[None])
  observed = None if observe is None else jax.tree.map(lambda *v: jnp.concatenate(v), *observed)
  return InnerResult(carry[0], jnp.concatenate(losses), observed)
