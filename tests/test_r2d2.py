"""R2D2: the dual ridge head against a direct (primal) solve, float64 meta-gradients."""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms import ALGORITHMS
from metajax.algorithms.r2d2 import ridge_head
from metajax.losses import cross_entropy
from metajax.models import MLP
from metajax.types import Split, Task

KEY = jax.random.PRNGKey(0)


class R2D2Test(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update('jax_enable_x64', True)

  def tearDown(self):
    jax.config.update('jax_enable_x64', False)
    super().tearDown()

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
    loss = lambda th: learner.outer_loss(th, task, KEY)[0]
    grads = jax.grad(loss)(theta)
    self.assertNotEqual(float(grads['ridge']['log_lambda']), 0.0)  # lambda is learned
    leaves, tree = jax.tree.flatten(theta)
    direction = tree.unflatten([jnp.asarray(rng.normal(size=np.shape(v))) for v in leaves])
    eps = 1e-6
    shifted = lambda sign: jax.tree.map(lambda v, u: v + sign * eps * u, theta, direction)
    numeric = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
    analytic = sum(jnp.vdot(g, u) for g, u in zip(jax.tree.leaves(grads),
                                                  jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)

  def test_settings_out_of_range_name_the_flag(self):
    with self.assertRaisesRegex(ValueError, r'^--r2d2_lambda=-1.0: must be > 0'):
      ALGORITHMS['r2d2'].section(r2d2_lambda=-1.0)
    with self.assertRaisesRegex(ValueError, r'^--r2d2_scale=0.0: must be > 0'):
      ALGORITHMS['r2d2'].section(r2d2_scale=0.0)


if __name__ == '__main__':
  absltest.main()
