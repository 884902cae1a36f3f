"""MetaOptNet-SVM: a multi-class SVM head solved on each support set, differentiated implicitly.

For support embeddings x_n with labels y_n, the head is the Crammer-Singer
multi-class SVM. Its dual, over alpha [n, C] (C classes),

    min_alpha  1/2 sum_k alpha_k^T K alpha_k - sum_n alpha_n[y_n]
    s.t.       alpha_n[k] <= c 1[k = y_n],  sum_k alpha_n[k] = 0,

with K = X X^T + I (the identity makes the dual strictly convex, so it has
one solution and the implicit function theorem applies), is a quadratic
program. Writing alpha_n = c onehot(y_n) - beta_n turns the constraints into
one scaled simplex per example (beta_n >= 0, sum_k beta_n[k] = c), and the
program is solved by accelerated projected gradient (constant momentum for a
strongly convex objective, optax's simplex projection) until the fixed-point
residual |beta - P(beta - eta grad)| is below `svm_tolerance * c`, or for at
most `svm_iterations` steps. Query logits are scale * sum_n alpha_n[k] <x_q, x_n>
with a learned scale.

The solution is differentiated implicitly (a `jax.custom_vjp`): the
derivative of the fixed point beta* = P(beta* - eta grad f(beta*)) by the
implicit function theorem, its transposed linear system solved by GMRES, so
no iteration of the solver is backpropagated through. (`jax.lax.custom_root`
would give the same derivative, but its JVP, transposed with a GMRES tangent
solve, raises NotImplementedError in jax 0.10.) The solver's iterations, final residual and the
fraction of tasks that stopped at the iteration limit are training metrics
(`solver_iterations`, `solver_residual`, `solver_unconverged`); the training
loop warns, naming the step, when a solve did not converge.

References:
  Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable Convex
  Optimization", CVPR 2019.
  Crammer & Singer, "On the Algorithmic Implementation of Multiclass
  Kernel-based Vector Machines", JMLR 2001.
"""

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.sparse import linalg as sparse_linalg
from optax import projections

from metajax import settings as settings_lib
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, register
from metajax.learner import MetaLearner
from metajax.settings import setting
from metajax.types import Array, LossFn, Params, PRNGKey, Task


def _project(beta: Array, c, allowed: Array) -> Array:
  """Each row of `beta` onto {b >= 0, sum b = c, b[k] = 0 where not `allowed[k]`}."""
  # A value far below every allowed one is projected to 0 (see the module docstring).
  low = jnp.min(jnp.where(allowed, beta, jnp.inf), -1, keepdims=True) - c - 1
  return jax.vmap(lambda row: projections.projection_simplex(row, c))(
      jnp.where(allowed, beta, low))


def _fixed_point(beta, kernel, c, onehot, allowed, rows, eta):
  """beta - P(beta - eta grad f(beta)): zero exactly at the dual's solution."""
  alpha = (c * onehot - beta) * rows[:, None]
  grad = -(kernel @ alpha - onehot)  # d f / d beta
  projected = _project(beta - eta * grad, c, allowed)
  # Padded rows stay at the start, so the system of the derivative is not singular there.
  return jnp.where(rows[:, None] > 0, beta - projected, beta - jnp.where(allowed, onehot * c, 0))


def _solve(kernel, c, onehot, allowed, rows, eta, momentum, max_iterations, tolerance):
  """Accelerated projected gradient from alpha = 0, to the residual `tolerance * c`."""
  step = lambda beta: _fixed_point(beta, kernel, c, onehot, allowed, rows, eta)
  residual = lambda beta: jnp.max(jnp.abs(step(beta))) / c

  def cond(carry):
    _, _, i, res = carry
    return (i < max_iterations) & (res > tolerance)

  def body(carry):
    beta, previous, i, _ = carry
    y = beta + momentum * (beta - previous)
    new = y - step(y)  # P(y - eta grad f(y)) on the real rows
    return new, beta, i + 1, residual(new)

  start = jnp.where(allowed, onehot * c, 0)  # alpha = 0: feasible
  beta, _, iterations, res = jax.lax.while_loop(
      cond, body, (start, start, jnp.zeros((), jnp.int32), residual(start)))
  return beta, {'iterations': iterations.astype(kernel.dtype), 'residual': res,
                'unconverged': (res > tolerance).astype(kernel.dtype)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _implicit_solve(kernel, c, onehot, allowed, rows, eta, momentum, max_iterations,
                    tolerance):
  return _solve(kernel, c, onehot, allowed, rows, eta, momentum, max_iterations, tolerance)


def _implicit_solve_fwd(kernel, c, onehot, allowed, rows, eta, momentum, max_iterations,
                        tolerance):
  beta, info = _solve(kernel, c, onehot, allowed, rows, eta, momentum, max_iterations,
                      tolerance)
  return (beta, info), (beta, kernel, c, onehot, allowed, rows, eta)


def _implicit_solve_bwd(max_iterations, tolerance, residuals, cotangents):
  """The implicit function theorem: with F(beta*, kernel, c) = 0, the cotangent of
  (kernel, c) is -(dF/d(kernel, c))^T u, where (dF/dbeta)^T u = the cotangent of beta*."""
  del max_iterations, tolerance
  beta, kernel, c, onehot, allowed, rows, eta = residuals
  g = cotangents[0]  # the diagnostics carry no gradient
  _, vjp_beta = jax.vjp(
      lambda b: _fixed_point(b, kernel, c, onehot, allowed, rows, eta), beta)
  size = beta.size
  u = sparse_linalg.gmres(lambda v: vjp_beta(v)[0], g,
                          tol=float(jnp.finfo(beta.dtype).eps) * 10,
                          restart=min(size, 50), maxiter=20)[0]
  _, vjp_params = jax.vjp(
      lambda k, c_: _fixed_point(beta, k, c_, onehot, allowed, rows, eta), kernel, c)
  d_kernel, d_c = vjp_params(-u)
  return d_kernel, d_c, None, None, None, None, None


_implicit_solve.defvjp(_implicit_solve_fwd, _implicit_solve_bwd)


def svm_dual(features: Array, labels: Array, c, mask: Optional[Array] = None,
             max_iterations: int = 1000, tolerance: float = 1e-5) -> tuple[Array, dict]:
  """The Crammer-Singer SVM dual solution alpha [n, S] on `features` [n, d] and `labels`.

  Classes are 0..S-1 (S = n, the support size); columns of classes absent from
  the support stay 0, and rows where `mask` is False (padding) take no part.
  Differentiable in `features` (and `c`) through the implicit function theorem
  (reverse mode).

  Returns:
    (alpha, {'iterations', 'residual', 'unconverged'}), the diagnostics as
    floats of the features' dtype (`unconverged` is 1 where the solve stopped at
    `max_iterations`).
  """
  n, dtype = features.shape[0], features.dtype
  rows = (jnp.ones(n, bool) if mask is None else mask).astype(dtype)
  onehot = jax.nn.one_hot(labels, n, dtype=dtype) * rows[:, None]
  allowed = jnp.broadcast_to(onehot.sum(0) > 0, (n, n))  # the classes present
  features = features * rows[:, None]
  kernel = features @ features.T + jnp.eye(n, dtype=dtype)
  # A step of 1 / L, L >= the largest eigenvalue (Gershgorin), and the momentum of
  # accelerated gradient for an objective of curvature between 1 and L.
  lipschitz = jax.lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(kernel), -1)))
  eta = 1 / lipschitz
  momentum = (jnp.sqrt(lipschitz) - 1) / (jnp.sqrt(lipschitz) + 1)
  c = jnp.asarray(c, dtype)
  beta, info = _implicit_solve(kernel, c, onehot, allowed, rows, eta, momentum,
                               max_iterations, tolerance)
  return (c * onehot - beta) * rows[:, None], info


@dataclasses.dataclass(frozen=True)
class MetaOptNetSettings(settings_lib.Section):
  """MetaOptNet's SVM head."""
  svm_c: float = setting(0.1, 'the SVM\'s regularisation C (0.1: the paper)', above=0)
  svm_iterations: int = setting(1000, 'at most this many solver iterations per task',
                                minimum=1)
  svm_tolerance: float = setting(1e-5, 'the solve stops when its fixed-point residual is '
                                 'below this times --svm_c', above=0)


def metaoptnet(model: nn.Module, loss_fn: LossFn, svm_c: float = 0.1,
               svm_iterations: int = 1000, svm_tolerance: float = 1e-5) -> MetaLearner:
  """MetaOptNet-SVM on the features `model.embed(x)`.

  Args:
    model: a metajax model (its `embed` is the feature extractor; the head
      is not used).
    loss_fn: `(logits, labels) -> scalar`, softmax cross-entropy.
    svm_c: the SVM's C.
    svm_iterations: the solver's iteration limit per task.
    svm_tolerance: its stopping residual, relative to C.

  Returns:
    A `MetaLearner` with no inner loop (`adapts=False`) that classifies any
    number of ways: `adapt` solves the SVM, phi = {'alpha': [S, S], 'support':
    [S, d], 'counts': [S], 'solver': the solve's diagnostics}.
  """
  for name, value in (('svm_c', svm_c), ('svm_tolerance', svm_tolerance)):
    if not value > 0:
      settings_lib.fail(name, value, 'must be > 0')
  if svm_iterations < 1:
    settings_lib.fail('svm_iterations', svm_iterations, 'must be a positive integer')

  def init(rng: PRNGKey, example_task: Task) -> Params:
    return {**common.init_embedding(model, rng, example_task),
            'svm': {'log_scale': jnp.zeros((), jnp.float32)}}

  def fit(theta, features, labels, mask, rng):
    del theta, rng
    alpha, info = svm_dual(features, labels, jnp.asarray(svm_c, features.dtype), mask,
                           svm_iterations, svm_tolerance)
    counts = jax.nn.one_hot(labels, features.shape[0], dtype=features.dtype)
    if mask is not None:
      counts = counts * mask[:, None].astype(features.dtype)
      features = features * mask[:, None].astype(features.dtype)
    return {'alpha': alpha, 'support': features, 'counts': counts.sum(0),
            'solver': info}

  def logits(theta, phi, features):
    scores = (features @ phi['support'].T) @ phi['alpha']
    scale = jnp.exp(theta['svm']['log_scale']).astype(features.dtype)
    return common.mask_absent(scale * scores, phi['counts'])

  return common.embedding_learner('metaoptnet', model, loss_fn, fit, logits, init=init)


register(AlgorithmSpec(
    name='metaoptnet', summary='MetaOptNet-SVM: a multi-class SVM head solved as a QP '
    '(Lee et al. 2019)',
    settings=MetaOptNetSettings, tasks=('classification',), any_ways=True,
    solver_settings=('svm_iterations', 'svm_tolerance'),
    build=lambda s, model, loss_fn: metaoptnet(model, loss_fn, s.svm_c, s.svm_iterations,
                                               s.svm_tolerance),
    dataset_defaults={'omniglot': common.EPISODIC_OMNIGLOT}))
