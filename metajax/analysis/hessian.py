"""Curvature of the inner loss: Hessian-vector products, Lanczos, Hutchinson.

Every function takes a scalar loss `f(params)` of a pytree and never forms the
Hessian (except `dense_hessian`, for small models and tests). Hessian-vector
products are forward-over-reverse (`jax.jvp` of `jax.grad`): one extra forward
and backward pass each, exact to rounding.
"""

from typing import Callable, NamedTuple, Optional

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.imaml import hvp
from metajax.types import Array, Params, PRNGKey

Loss = Callable[[Params], Array]


def dense_hessian(f: Loss, params: Params) -> Array:
  """The full [n, n] Hessian of `f` over the flattened parameters."""
  flat, unravel = ravel_pytree(params)
  return jax.hessian(lambda x: f(unravel(x)))(flat)


def flat_hvp(f: Loss, params: Params) -> tuple[Callable[[Array], Array], int]:
  """(v -> H v on flat vectors, n): the HVP of `f` at `params`, flattened."""
  flat, unravel = ravel_pytree(params)
  g = lambda x: f(unravel(x))
  return (lambda v: jax.jvp(jax.grad(g), (flat,), (v,))[1]), flat.size


class LanczosResult(NamedTuple):
  eigenvalues: Array  # the k largest Ritz values, descending
  ritz_values: Array  # every Ritz value of the tridiagonal matrix, descending


def lanczos(matvec: Callable[[Array], Array], dim: int, num_iters: int, key: PRNGKey,
            dtype=jnp.float32) -> Array:
  """Ritz values of a symmetric operator after `num_iters` Lanczos steps.

  Full reorthogonalisation against every earlier Lanczos vector (the basis is
  [num_iters, dim]), so the Ritz values do not develop spurious copies; with
  `num_iters == dim` they are the operator's eigenvalues up to rounding. The
  extreme Ritz values converge first: a few dozen iterations give the top
  eigenvalues of a network's Hessian.

  Returns:
    The Ritz values, in descending order.
  """
  num_iters = min(num_iters, dim)
  v0 = jax.random.normal(key, (dim,), dtype)
  v0 = v0 / jnp.linalg.norm(v0)

  tolerance = jnp.sqrt(jnp.finfo(dtype).eps)

  def step(carry, i):
    basis, alphas, betas, v, v_prev, beta = carry
    av = matvec(v)
    w = av - beta * v_prev
    alpha = jnp.dot(w, v)
    w = w - alpha * v
    mask = (jnp.arange(num_iters) <= i).astype(dtype)[:, None]
    orthogonalise = lambda u: u - (basis * mask).T @ ((basis * mask) @ u)
    # Full reorthogonalisation (twice is enough), against the vectors so far.
    w = orthogonalise(orthogonalise(w))
    beta_next = jnp.linalg.norm(w)
    # Breakdown: the Krylov space is invariant (e.g. a Hessian of low rank).
    # Restart from a random vector orthogonal to the basis, decoupled (beta 0),
    # so the remaining Ritz values come from the orthogonal complement.
    breakdown = beta_next <= tolerance * jnp.maximum(jnp.linalg.norm(av), 1e-30)
    fresh = orthogonalise(orthogonalise(
        jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype)))
    w = jnp.where(breakdown, fresh, w)
    beta_next = jnp.where(breakdown, 0.0, beta_next)
    norm = jnp.linalg.norm(w)
    v_next = w / jnp.where(norm > 0, norm, 1)
    basis = basis.at[i + 1].set(v_next, mode='drop')
    return (basis, alphas.at[i].set(alpha), betas.at[i].set(beta_next), v_next, v,
            beta_next), None

  basis = jnp.zeros((num_iters, dim), dtype).at[0].set(v0)
  init = (basis, jnp.zeros(num_iters, dtype), jnp.zeros(num_iters, dtype), v0,
          jnp.zeros(dim, dtype), jnp.zeros((), dtype))
  (_, alphas, betas, *_), _ = jax.lax.scan(step, init, jnp.arange(num_iters))
  tridiagonal = (jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1))
  return jnp.linalg.eigvalsh(tridiagonal)[::-1]


def top_eigenvalues(f: Loss, params: Params, k: int = 1, num_iters: int = 30,
                    key: Optional[PRNGKey] = None) -> LanczosResult:
  """The `k` largest eigenvalues of the Hessian of `f` at `params`, by Lanczos."""
  matvec, dim = flat_hvp(f, params)
  dtype = ravel_pytree(params)[0].dtype
  key = jax.random.PRNGKey(0) if key is None else key
  ritz = lanczos(matvec, dim, num_iters, key, dtype)
  return LanczosResult(ritz[:k], ritz)


def hutchinson_trace(f: Loss, params: Params, key: PRNGKey,
                     num_samples: int = 100) -> tuple[Array, Array]:
  """(estimate, standard error) of trace(H) by Hutchinson's estimator.

  trace(H) = E[v^T H v] for Rademacher v; the mean of `num_samples` draws and
  its standard error.
  """
  matvec, dim = flat_hvp(f, params)
  dtype = ravel_pytree(params)[0].dtype
  signs = jax.random.rademacher(key, (num_samples, dim), dtype)
  samples = jax.lax.map(lambda v: jnp.dot(v, matvec(v)), signs)
  return jnp.mean(samples), jnp.std(samples) / np.sqrt(num_samples)


def trajectory_top_eigenvalues(f: Loss, trajectory: list[Params], k: int = 1,
                               num_iters: int = 30, key: Optional[PRNGKey] = None) -> Array:
  """[len(trajectory), k]: the top Hessian eigenvalues of `f` at each point."""
  return jnp.stack([top_eigenvalues(f, p, k, num_iters, key).eigenvalues
                    for p in trajectory])


__all__ = ['hvp', 'dense_hessian', 'flat_hvp', 'lanczos', 'top_eigenvalues',
           'hutchinson_trace', 'trajectory_top_eigenvalues', 'LanczosResult']
