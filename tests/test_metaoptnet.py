"""MetaOptNet-SVM: the QP against a direct solve, implicit float64 gradients, solver reports."""

import contextlib
import io
import os

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from metajax import cli, hooks
from metajax.algorithms import ALGORITHMS
from metajax.algorithms.metaoptnet import svm_dual
from metajax.config import Config
from metajax.learner import SOLVER_KEYS
from metajax.losses import cross_entropy
from metajax.models import MLP
from tests import helpers

KEY = jax.random.PRNGKey(0)


task = helpers.gaussian_task


def direct_dual(x, labels, classes, c):
  """The Crammer-Singer dual by scipy's SLSQP: alpha [n, classes]."""
  n = x.shape[0]
  kernel, onehot = x @ x.T + np.eye(n), np.eye(classes)[labels]
  objective = lambda a: (0.5 * np.sum(a.reshape(n, classes) * (kernel @ a.reshape(n, classes)))
                         - np.sum(a.reshape(n, classes) * onehot))
  gradient = lambda a: (kernel @ a.reshape(n, classes) - onehot).ravel()
  rows = [{'type': 'eq', 'fun': lambda a, i=i: a.reshape(n, classes)[i].sum()} for i in range(n)]
  bounds = [(None, c * onehot[i, k]) for i in range(n) for k in range(classes)]
  result = optimize.minimize(objective, np.zeros(n * classes), jac=gradient, bounds=bounds,
                             constraints=rows, method='SLSQP',
                             options={'ftol': 1e-15, 'maxiter': 1000})
  return result.x.reshape(n, classes)


def learner(**settings):
  return ALGORITHMS['metaoptnet'].learner(MLP(hidden=(6,), out=3), cross_entropy, **settings)


class MetaOptNetTest(helpers.Float64TestCase):

  @parameterized.parameters((6, 4, 0.1), (6, 10, 1.0), (9, 3, 0.5))
  def test_the_dual_solution_equals_a_direct_qp_solve(self, n, d, c):
    rng = np.random.default_rng(n * d)
    x, labels = rng.normal(size=(n, d)), np.arange(n) % 3
    alpha, info = svm_dual(jnp.asarray(x), jnp.asarray(labels), c, max_iterations=100000,
                           tolerance=1e-13)
    self.assertEqual(float(info['unconverged']), 0)
    np.testing.assert_allclose(alpha[:, :3], direct_dual(x, labels, 3, c), atol=1e-6)
    np.testing.assert_allclose(alpha[:, 3:], 0, atol=1e-12)  # classes absent from the support
    # Padded rows (mask False) take no part.
    padded = np.concatenate([x, rng.normal(size=(2, d))])
    padded_alpha, _ = svm_dual(jnp.asarray(padded), jnp.asarray(np.r_[labels, 0, 1]), c,
                               jnp.arange(n + 2) < n, 100000, 1e-13)
    np.testing.assert_allclose(padded_alpha[:n, :3], alpha[:, :3], atol=1e-9)
    np.testing.assert_allclose(padded_alpha[n:], 0, atol=1e-12)

  def test_meta_gradient_matches_finite_differences(self):
    svm = learner(svm_c=0.5, svm_iterations=100000, svm_tolerance=1e-14)
    t = task()
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), svm.init(KEY, t))
    theta['svm']['log_scale'] = jnp.float64(0.7)
    grads = helpers.check_gradient(lambda th: svm.outer_loss(th, t, KEY)[0], theta, seed=4,
                                   rtol=1e-6)
    self.assertGreater(float(jnp.abs(grads['model']['params']['layers_0']['kernel']).sum()), 0)

  def test_padding_the_support_set_changes_nothing(self):
    svm = learner(svm_iterations=100000, svm_tolerance=1e-14)
    helpers.check_padding_changes_nothing(svm, task(), KEY, loss_rtol=1e-10, grad_rtol=1e-7,
                                          grad_atol=1e-12)

  def test_the_solver_reports_iterations_residual_and_non_convergence(self):
    t = task()
    for iterations, unconverged in ((2, 1.0), (100000, 0.0)):
      svm = learner(svm_iterations=iterations, svm_tolerance=1e-10)
      theta = svm.init(KEY, t)
      _, aux = svm.outer_loss(theta, t, KEY)
      self.assertContainsSubset(SOLVER_KEYS, aux)
      self.assertEqual(float(aux['solver_unconverged']), unconverged)
      if unconverged:
        self.assertEqual(float(aux['solver_iterations']), 2)
        self.assertGreater(float(aux['solver_residual']), 1e-10)
      else:
        self.assertLessEqual(float(aux['solver_residual']), 1e-10)

  def test_settings_out_of_range_name_the_flag(self):
    with self.assertRaisesRegex(ValueError, r'^--svm_c=0.0: must be > 0'):
      ALGORITHMS['metaoptnet'].section(svm_c=0.0)
    with self.assertRaisesRegex(ValueError, r'^--svm_iterations=0: must be a positive'):
      ALGORITHMS['metaoptnet'].section(svm_iterations=0)
    with self.assertRaisesRegex(ValueError, r'^--svm_tolerance=-1.0: must be > 0'):
      ALGORITHMS['metaoptnet'].section(svm_tolerance=-1.0)


class MetaOptNetRunTest(absltest.TestCase):

  def test_the_log_hook_names_each_step_whose_solve_did_not_converge(self):
    calls = []
    log = hooks.LogMetrics(3, 3, None, hooks.Clock(),
                           unconverged=lambda *args: calls.append(args))
    for step, fraction in ((1, 0.0), (2, 0.5), (3, 0.0)):
      log(step, None, {'query_loss': jnp.float32(1), 'solver_unconverged': jnp.float32(fraction),
                       'solver_residual': jnp.float32(fraction / 4)})
    self.assertEqual(calls, [(2, 0.5, 0.125)])

  def test_naming_metaoptnet_and_omniglot_gives_the_presets_settings(self):
    path = os.path.join(helpers.REPO, 'experiments', 'configs', 'omniglot_metaoptnet_5w1s.flags')
    self.assertEqual(Config(algorithm='metaoptnet', dataset='omniglot').validate(),
                     cli.config_from_flagfile(path))

  @pytest.mark.slow
  def test_trains_on_class_folders_resumes_predicts_and_warns_of_unconverged_solves(self):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      helpers.check_folders_run(self, 'metaoptnet', svm_iterations=1, log_every=1)
    self.assertRegex(stderr.getvalue(), r'warning: step 1: the metaoptnet solve of 2 of 2 tasks '
                     r'stopped at its iteration limit unconverged .* raise --svm_iterations=1 or '
                     r'--svm_tolerance=1e-05')


if __name__ == '__main__':
  absltest.main()
