"""MAML's meta-gradient against finite differences and independent computations."""

from absl.testing import parameterized
import chex
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import optax
import pytest

from metajax.algorithms.common import split_loss
from metajax.losses import mse
from metajax.models import MLP
from tests import helpers

KEY = jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def central_differences(f, x, eps=1e-6):
  """Gradient of scalar f at flat x by central differences, coordinate-wise."""
  basis = jnp.eye(x.size, dtype=x.dtype) * eps
  plus = jax.vmap(lambda d: f(x + d))(basis)
  minus = jax.vmap(lambda d: f(x - d))(basis)
  return (plus - minus) / (2 * eps)


class MAMLFiniteDifferenceTest(parameterized.TestCase):

  @parameterized.product(inner_steps=(1, 3), inner_optimizer=('sgd', 'adam', 'momentum'))
  def test_meta_gradient_matches_finite_differences(self, inner_steps, inner_optimizer):
    lr = {'sgd': 0.05, 'momentum': 0.05, 'adam': 0.01}[inner_optimizer]
    learner = helpers.learner('maml', inner_lr=lr, inner_steps=inner_steps,
                              inner_optimizer=inner_optimizer)
    tasks = helpers.sinusoid_tasks(dtype=jnp.float64)
    task = helpers.first(tasks)
    theta = helpers.init(learner, tasks, dtype=jnp.float64)
    flat, unravel = ravel_pytree(theta)
    self.assertEqual(flat.dtype, jnp.float64)

    f = jax.jit(lambda x: learner.outer_loss(unravel(x), task, KEY)[0])
    grad = ravel_pytree(jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0])(theta))[0]
    fd = central_differences(f, flat)
    rel = float(jnp.linalg.norm(grad - fd) / jnp.linalg.norm(fd))
    self.assertLessEqual(rel, 1e-6)
    if inner_optimizer == 'adam':
      return  # Adam's first step is ~lr * sign(g): its second-order term is ~0.
    # The second-order terms matter here: first-order MAML is measurably off.
    fo = helpers.learner('fomaml', inner_lr=lr, inner_steps=inner_steps,
                         inner_optimizer=inner_optimizer)
    fo_grad = ravel_pytree(jax.grad(lambda t: fo.outer_loss(t, task, KEY)[0])(theta))[0]
    self.assertGreater(float(jnp.linalg.norm(fo_grad - fd) / jnp.linalg.norm(fd)), 1e-4)


class FirstOrderTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.alpha = 0.05
    self.model = MLP(hidden=(8, 8))
    self.tasks = helpers.sinusoid_tasks(dtype=jnp.float64)
    self.task = helpers.first(self.tasks)
    self.maml = helpers.learner('maml', inner_lr=self.alpha, inner_steps=1)
    self.fomaml = helpers.learner('fomaml', inner_lr=self.alpha, inner_steps=1)
    self.theta = helpers.init(self.maml, self.tasks, dtype=jnp.float64)

  def grad(self, learner):
    return jax.grad(lambda t: learner.outer_loss(t, self.task, KEY)[0])(self.theta)

  def query_grad_at_phi(self, steps=1):
    # Independent: plain gradient descent written out by hand.
    support_loss = lambda v: split_loss(self.model, mse, v, self.task.support)
    phi = self.theta['model']
    for _ in range(steps):
      phi = jax.tree.map(lambda p, g: p - self.alpha * g, phi, jax.grad(support_loss)(phi))
    return phi, jax.grad(lambda v: split_loss(self.model, mse, v, self.task.query))(phi)

  @parameterized.parameters(1, 3)
  def test_fomaml_is_query_gradient_at_adapted_params(self, steps):
    fomaml = helpers.learner('fomaml', inner_lr=self.alpha, inner_steps=steps)
    grad = jax.grad(lambda t: fomaml.outer_loss(t, self.task, KEY)[0])(self.theta)
    _, expected = self.query_grad_at_phi(steps)
    chex.assert_trees_all_close(grad['model'], expected, rtol=1e-10, atol=1e-12)

  def test_maml_minus_fomaml_is_hessian_vector_correction(self):
    support_loss = lambda v: split_loss(self.model, mse, v, self.task.support)
    _, g_query = self.query_grad_at_phi()
    # d phi / d theta = I - alpha H(theta), so MAML = FOMAML - alpha H g_query.
    hvp = jax.jvp(jax.grad(support_loss), (self.theta['model'],), (g_query,))[1]
    expected = jax.tree.map(lambda h: -self.alpha * h, hvp)
    diff = jax.tree.map(jnp.subtract, self.grad(self.maml)['model'],
                        self.grad(self.fomaml)['model'])
    chex.assert_trees_all_close(diff, expected, rtol=1e-9, atol=1e-12)
    self.assertGreater(float(optax.tree.norm(diff)), 1e-6)
