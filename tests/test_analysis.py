"""Second-order tools, iMAML and truncation against dense float64 computations."""

from absl.testing import parameterized
import chex
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms
from metajax import analysis
from metajax.algorithms.common import split_loss
from metajax.algorithms import ALGORITHMS
from metajax.losses import mse
from metajax.models import MLP
from metajax.algorithms.registry import INNER_OPTIMIZERS
from tests import helpers

KEY = jax.random.PRNGKey(0)
MODEL = MLP(hidden=(4, 4))  # 33 parameters: dense Hessians are cheap


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def _problem(seed=0):
  tasks = helpers.sinusoid_tasks(seed=seed, num_tasks=3, dtype=jnp.float64)
  learner = helpers.learner('maml', hidden=(4, 4))
  variables = helpers.init(learner, tasks, dtype=jnp.float64)['model']
  task = helpers.first(tasks)
  support = lambda v: split_loss(MODEL, mse, v, task.support)
  query = lambda v: split_loss(MODEL, mse, v, task.query)
  return tasks, task, variables, support, query


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0])


class HessianTest(parameterized.TestCase):

  def test_hvp_equals_dense_hessian_times_vector(self):
    _, _, variables, support, _ = _problem()
    dense = np.asarray(analysis.dense_hessian(support, variables))
    flat, unravel = ravel_pytree(variables)
    v = jax.random.normal(KEY, flat.shape, jnp.float64)
    got = _flat(analysis.hvp(support, variables, unravel(v)))
    np.testing.assert_allclose(got, dense @ np.asarray(v), rtol=1e-10, atol=1e-12)
    self.assertGreater(np.linalg.norm(got), 1e-3)  # not trivially zero

  def test_hvp_along_the_inner_trajectory(self):
    _, _, variables, support, _ = _problem()
    points = analysis.inner_trajectory(support, variables,
                                       optax.sgd(0.1), 3)
    self.assertLen(points, 4)
    flat, unravel = ravel_pytree(variables)
    v = jnp.ones_like(flat)
    for p in points[1:]:
      dense = np.asarray(analysis.dense_hessian(support, p))
      np.testing.assert_allclose(_flat(analysis.hvp(support, p, unravel(v))),
                                 dense @ np.asarray(v), rtol=1e-10, atol=1e-12)
    self.assertFalse(np.allclose(_flat(points[0]), _flat(points[-1])))

  def test_lanczos_matches_eigh(self):
    _, _, variables, support, _ = _problem()
    dense = np.asarray(analysis.dense_hessian(support, variables))
    expected = np.sort(np.linalg.eigvalsh(dense))[::-1]
    result = analysis.top_eigenvalues(support, variables, k=3, num_iters=dense.shape[0])
    np.testing.assert_allclose(result.eigenvalues, expected[:3], rtol=1e-8, atol=1e-10)
    # The extreme eigenvalue converges long before the Krylov space is full.
    early = analysis.top_eigenvalues(support, variables, k=1, num_iters=15)
    np.testing.assert_allclose(early.eigenvalues[0], expected[0], rtol=1e-4)

  @pytest.mark.slow
  def test_hutchinson_trace_within_its_error(self):
    _, _, variables, support, _ = _problem()
    exact = np.trace(np.asarray(analysis.dense_hessian(support, variables)))
    estimate, stderr = analysis.hutchinson_trace(support, variables, KEY, num_samples=2000)
    self.assertLess(abs(float(estimate) - exact), 4 * float(stderr) + 1e-9)
    self.assertLess(float(stderr), 0.2 * abs(exact))


class MetaGradientPartsTest(parameterized.TestCase):

  def test_parts_against_dense_formula_for_one_sgd_step(self):
    tasks, task, variables, support, query = _problem()
    alpha = 0.1
    parts = analysis.task_meta_gradients(
        MODEL, mse, variables, task, optax.sgd(alpha), 1, lam=2.0,
        cg_steps=10)
    # Independent: phi = theta - alpha g_s; SO = (I - alpha H_s(theta)) grad L_q(phi).
    flat, unravel = ravel_pytree(variables)
    phi = unravel(flat - alpha * ravel_pytree(jax.grad(support)(variables))[0])
    gq = _flat(jax.grad(query)(phi))
    h = np.asarray(analysis.dense_hessian(support, variables))
    np.testing.assert_allclose(parts['first_order'], gq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(parts['second_order'], gq - alpha * h @ gq, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(parts['hessian_term'], -alpha * h @ gq, rtol=1e-9, atol=1e-12)

  def test_compare_reports_consistent_summaries(self):
    tasks, _, variables, _, _ = _problem()
    out = analysis.compare_meta_gradients(MODEL, mse, variables, tasks,
                                          inner_optimizer=optax.sgd(0.1),
                                          inner_steps=2, per_task=True)
    grads = out['per_task']
    self.assertEqual(grads['second_order'].shape, (3, 33))
    mean_so, mean_fo = np.mean(grads['second_order'], 0), np.mean(grads['first_order'], 0)
    cos = mean_so @ mean_fo / np.linalg.norm(mean_so) / np.linalg.norm(mean_fo)
    np.testing.assert_allclose(out['cos_so_fo'], cos, rtol=1e-9)
    self.assertLess(out['cos_so_fo'], 1 - 1e-6)  # the Hessian term is not zero
    deviations = grads['first_order'] - mean_fo
    snr = np.sum(mean_fo ** 2) / np.mean(np.sum(deviations ** 2, -1))
    np.testing.assert_allclose(out['snr_first_order'], snr, rtol=1e-9)


class IMAMLTest(parameterized.TestCase):

  def test_cg_gradient_equals_closed_form_at_the_inner_solution(self):
    tasks, task, _, _, _ = _problem()
    probe = helpers.learner('imaml', hidden=(4, 4))
    theta = helpers.init(probe, tasks, dtype=jnp.float64)
    support = lambda v: split_loss(MODEL, mse, v, task.support)
    query = lambda v: split_loss(MODEL, mse, v, task.query)
    lam = 2.0
    learner = helpers.learner('imaml', hidden=(4, 4), inner_lr=0.05, inner_steps=20,
                              imaml_lambda=lam, cg_steps=33)
    phi = learner.adapt(theta, task.support, KEY).params
    h = np.asarray(analysis.dense_hessian(support, phi))
    self.assertGreater(np.linalg.eigvalsh(np.eye(33) + h / lam).min(), 0)  # CG applies
    g = _flat(jax.grad(query)(phi))
    expected = np.linalg.solve(np.eye(33) + h / lam, g)
    grads, _ = learner.meta_gradient(theta, task, KEY)
    np.testing.assert_allclose(_flat(grads['model']), expected, rtol=1e-7, atol=1e-10)
    self.assertGreater(np.linalg.norm(expected - g), 1e-3 * np.linalg.norm(g))

  def test_inner_loop_solves_the_proximal_problem(self):
    tasks, task, _, _, _ = _problem()
    lam = 2.0
    learner = helpers.learner('imaml', hidden=(4, 4), inner_lr=0.05, inner_steps=400,
                              imaml_lambda=lam)
    theta = helpers.init(learner, tasks, dtype=jnp.float64)
    phi = learner.adapt(theta, task.support, KEY).params
    support = lambda v: split_loss(MODEL, mse, v, task.support)
    stationarity = _flat(jax.grad(support)(phi)) + lam * (_flat(phi) - _flat(theta['model']))
    self.assertLess(np.linalg.norm(stationarity), 1e-6)
    self.assertGreater(np.linalg.norm(_flat(phi) - _flat(theta['model'])), 1e-3)

  def test_bad_arguments_name_the_argument_or_the_flag(self):
    with self.assertRaisesRegex(ValueError, r'^imaml_lambda=0.0: must be > 0'):
      algorithms.imaml(MODEL, mse, imaml_lambda=0.0)
    with self.assertRaisesRegex(ValueError, r'^cg_steps=0'):
      algorithms.imaml(MODEL, mse, cg_steps=0)
    with self.assertRaisesRegex(ValueError, r'--imaml_lambda=0'):
      helpers.learner('imaml', imaml_lambda=0.0)
    with self.assertRaisesRegex(ValueError, r'--cg_steps=0'):
      ALGORITHMS['imaml'].section(cg_steps=0)


class TruncationTest(parameterized.TestCase):

  @parameterized.parameters(('sgd', 0), ('sgd', 2), ('momentum', 1), ('adam', 3), ('sgd', 5))
  def test_truncated_meta_gradient_equals_hand_truncated_unroll(self, optimizer, k):
    tasks, task, _, support, query = _problem()
    n, lr = 4, {'adam': 0.01}.get(optimizer, 0.05)
    learner = helpers.learner('maml', hidden=(4, 4), inner_lr=lr, inner_steps=n,
                              inner_optimizer=optimizer, backprop_steps=k)
    theta = helpers.init(learner, tasks, dtype=jnp.float64)
    opt = INNER_OPTIMIZERS[optimizer](lr)

    def hand(variables):  # Python loop; gradients of the first n - k steps held constant
      phi, state = variables, opt.init(variables)
      for i in range(n):
        g = jax.grad(support)(phi)
        if i < n - k:
          g = jax.lax.stop_gradient(g)
        updates, state = opt.update(g, state, phi)
        phi = jax.tree.map(jnp.add, phi, updates)
      return query(phi)

    got = jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0])(theta)['model']
    chex.assert_trees_all_close(got, jax.grad(hand)(theta['model']), rtol=1e-10, atol=1e-13)

  def test_truncation_spans_first_order_to_full(self):
    tasks, task, _, _, _ = _problem()
    grad = lambda learner, theta: _flat(
        jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0])(theta))
    make = lambda name, **kw: helpers.learner(name, hidden=(4, 4), inner_lr=0.05,
                                              inner_steps=3, **kw)
    theta = helpers.init(make('maml'), tasks, dtype=jnp.float64)
    np.testing.assert_allclose(grad(make('maml', backprop_steps=0), theta),
                               grad(make('fomaml'), theta), rtol=1e-12)
    np.testing.assert_allclose(grad(make('maml', backprop_steps=3), theta),
                               grad(make('maml'), theta), rtol=1e-12)
    self.assertFalse(np.allclose(grad(make('maml', backprop_steps=1), theta),
                                 grad(make('maml'), theta), rtol=1e-6))

  def test_backprop_steps_for_an_algorithm_without_an_unroll_is_refused(self):
    with self.assertRaisesRegex(ValueError, r'--backprop_steps=2.*reptile'):
      ALGORITHMS['reptile'].section(backprop_steps=2)
