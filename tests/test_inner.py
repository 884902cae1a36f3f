"""The differentiable inner loop: steps, losses, truncation errors, remat, learned rates."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import inner
from tests import helpers

KEY = jax.random.PRNGKey(0)


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


class InnerLoopTest(parameterized.TestCase):

  def test_sgd_inner_loop_matches_hand_written_descent(self):
    loss = lambda p: jnp.sum((p['w'] - 3.0) ** 2) + jnp.sum(p['w'] ** 4) * 0.1
    params = {'w': jnp.array([0.5, -1.0, 2.0])}
    result = inner.inner_loop(loss, params, optax.sgd(0.05), 4)
    w = params['w']
    losses = []
    for _ in range(4):
      losses.append(loss({'w': w}))
      w = w - 0.05 * jax.grad(lambda v: loss({'w': v}))(w)
    np.testing.assert_allclose(result.params['w'], w, rtol=1e-12)
    np.testing.assert_allclose(result.losses, jnp.stack(losses), rtol=1e-12)

  def test_zero_steps_is_identity_with_the_loss_at_params(self):
    params = {'w': jnp.ones(3)}
    result = inner.inner_loop(lambda p: jnp.sum(p['w'] ** 2), params, optax.sgd(0.1), 0)
    chex.assert_trees_all_equal(result.params, params)
    np.testing.assert_allclose(result.losses, [3.0])

  def test_bad_arguments_name_the_argument(self):
    params = {'w': jnp.ones(3)}
    with self.assertRaisesRegex(ValueError, r'^num_steps=-1: must be >= 0'):
      inner.inner_loop(lambda p: jnp.sum(p['w']), params, optax.sgd(0.1), -1)
    with self.assertRaisesRegex(ValueError, r'^backprop_steps=-2: must be >= 0'):
      inner.inner_loop(lambda p: jnp.sum(p['w']), params, optax.sgd(0.1), 2, backprop_steps=-2)

  def test_remat_gives_the_same_meta_gradient(self):
    tasks = helpers.sinusoid_tasks(dtype=jnp.float64)
    task = helpers.first(tasks)
    plain = helpers.learner('maml', inner_lr=0.05, inner_steps=3)
    remat = helpers.learner('maml', inner_lr=0.05, inner_steps=3, remat=True)
    theta = helpers.init(plain, tasks, dtype=jnp.float64)
    g = lambda l: jax.grad(lambda t: l.outer_loss(t, task, KEY)[0])(theta)
    chex.assert_trees_all_close(g(plain), g(remat), rtol=1e-12)

  def test_learned_rates_scale_each_leaf(self):
    params = {'a': jnp.array([1.0, 2.0]), 'b': jnp.array(3.0)}
    rates = {'a': jnp.array([0.1, 0.5]), 'b': jnp.array(2.0)}
    loss = lambda p: jnp.sum(p['a'] ** 2) + p['b'] ** 2
    step = optax.chain(optax.sgd(1.0), inner.scale_by_learned_rates(rates))
    phi = inner.inner_loop(loss, params, step, 1).params
    chex.assert_trees_all_close(phi, {'a': jnp.array([1.0 - 0.1 * 2, 2.0 - 0.5 * 4]),
                                      'b': jnp.array(3.0 - 2.0 * 6)})
    # The rates get a meta-gradient through the step.
    grad = jax.grad(lambda r: loss(inner.inner_loop(
        loss, params, optax.chain(optax.sgd(1.0), inner.scale_by_learned_rates(r)), 1).params))(
            rates)
    self.assertGreater(float(optax.tree.norm(grad)), 0)
