"""R2D2: the dual ridge head against a direct (primal) solve, float64 meta-gradients."""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms import ALGORITHMS
from metajax.algorithms.r2d2 import ridge_head
from metajax.losses import cross_entropy
from metajax.models import MLP
from metajax.types import Split, Task
from tests import helpers

KEY = jax.random.PRNGKey(0)


class R2D2Test(helpers.Float64TestCase):

  @parameterized.parameters((6, 4), (6, 10))  # fewer and more features than examples
  def test_dual_solution_equals_the_primal_solve(self, n, d):
    rng = np.random.default_rng(0)
    x, labels, lam = rng.normal(size=(n, d)), np.arange(n) % 3, 0.7
    y = np.eye(n)[labels]
    primal = np.linalg.solve(x.T @ x + lam * np.eye(d), x.T @ y)
    np.testing.assert_allclose(ridge_head(jnp.asarray(x), jnp.asarray(labels), lam), primal,
                               rtol=1e-9, atol=1e-12)
    # Padded rows (mask False) change nothing: the head of the real rows, columns for S classes.
    padded_x = np.concatenate([x, rng.normal(size=(2, d))])
    mask = np.arange(n + 2) < n
    head = ridge_head(jnp.asarray(padded_x), jnp.asarray(np.r_[labels, 1, 2]), lam,
                      jnp.asarray(mask))
    np.testing.assert_allclose(head[:, :n], primal, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(head[:, n:], 0, atol=1e-12)

  def test_meta_gradient_matches_finite_differences(self):
    learner = ALGORITHMS['r2d2'].learner(MLP(hidden=(6,), out=3), cross_entropy,
                                         r2d2_lambda=0.5, r2d2_scale=2.0)
    rng = np.random.default_rng(1)
    split = lambda n: Split(jnp.asarray(rng.normal(size=(3 * n, 5))), jnp.arange(3 * n) % 3)
    task = Task(split(2), split(3))
    theta = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), learner.init(KEY, task))
    self.assertEqual(set(theta['ridge']), {'log_lambda', 'log_scale', 'bias'})
    grads = helpers.check_gradient(lambda th: learner.outer_loss(th, task, KEY)[0], theta, seed=1)
    self.assertNotEqual(float(grads['ridge']['log_lambda']), 0.0)  # lambda is learned

  def test_settings_out_of_range_name_the_flag(self):
    with self.assertRaisesRegex(ValueError, r'^--r2d2_lambda=-1.0: must be > 0'):
      ALGORITHMS['r2d2'].section(r2d2_lambda=-1.0)
    with self.assertRaisesRegex(ValueError, r'^--r2d2_scale=0.0: must be > 0'):
      ALGORITHMS['r2d2'].section(r2d2_scale=0.0)


class R2D2RunTest(absltest.TestCase):

  @pytest.mark.slow
  def test_trains_on_class_folders_resumes_and_predicts_files(self):
    helpers.check_folders_run(self, 'r2d2')


if __name__ == '__main__':
  absltest.main()
