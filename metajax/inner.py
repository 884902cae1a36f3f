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

from typing import Callable, NamedTuple, Optional

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


def inner_loop(
    loss_fn: Callable[[Params], Array],
    params: Params,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    *,
    first_order: bool = False,
    remat: bool = False,
    backprop_steps: Optional[int] = None,
) -> InnerResult:
  """Runs `num_steps` steps of `optimizer` on `loss_fn`, starting at `params`.

  phi_0 = params;  g_k = grad loss_fn(phi_k);
  (u_k, s_{k+1}) = optimizer.update(g_k, s_k, phi_k);  phi_{k+1} = phi_k + u_k.

  Args:
    loss_fn: the support loss as a function of the adapted parameters.
    params: the starting point theta (a pytree).
    optimizer: any optax transformation; it is differentiated through.
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

  Returns:
    `InnerResult(params=phi, losses=loss before each step)`; with
    `num_steps=0`, `losses` holds the one loss at `params`.
  """
  if num_steps < 0:
    raise ValueError(f'num_steps={num_steps}: must be >= 0')
  if backprop_steps is not None and backprop_steps < 0:
    raise ValueError(f'backprop_steps={backprop_steps}: must be >= 0')
  exact = num_steps if backprop_steps is None else min(backprop_steps, num_steps)
  if first_order:
    exact = 0

  def make_step(constant_gradients):
    def step(carry, _):
      phi, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(phi)
      if constant_gradients:
        grads = jax.lax.stop_gradient(grads)
      updates, opt_state = optimizer.update(grads, opt_state, phi)
      return (optax.apply_updates(phi, updates), opt_state), loss
    return jax.checkpoint(step) if remat else step

  carry = (params, optimizer.init(params))
  losses = []
  for constant, length in ((True, num_steps - exact), (False, exact)):
    if length:
      carry, part = jax.lax.scan(make_step(constant), carry, None, length=length)
      losses.append(part)
  losses = jnp.concatenate(losses) if losses else loss_fn(params)[None]
  return InnerResult(carry[0], losses)
