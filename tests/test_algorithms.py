"""Algorithm-specific properties: Reptile's update, Meta-SGD's rates, ANIL's head."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import optax

from metajax import algorithms
from metajax.algorithms.common import split_loss
from metajax.losses import mse
from metajax.models import MLP
from metajax.step import create_train_state, make_meta_train_step
from tests import helpers

KEY = jax.random.PRNGKey(0)


class ReptileTest(parameterized.TestCase):

  @parameterized.parameters(1.0, 0.1)
  def test_update_is_mean_of_phi_minus_theta_times_step_size(self, epsilon):
    model, lr, steps = MLP(hidden=(8, 8)), 0.02, 4
    learner = algorithms.reptile(model, mse, inner_optimizer=optax.sgd(lr), inner_steps=steps)
    tasks = helpers.sinusoid_tasks(num_tasks=3)
    state = create_train_state(learner, optax.sgd(epsilon), KEY, helpers.first(tasks))
    theta = state.theta['model']
    new_state, _ = make_meta_train_step(learner, optax.sgd(epsilon), donate=False)(
        state, tasks, KEY)

    # Independent: hand-written SGD on each task's support set.
    phis = []
    for i in range(3):
      task = jax.tree.map(lambda v: v[i], tasks)
      phi = theta
      for _ in range(steps):
        g = jax.grad(lambda v: split_loss(model, mse, v, task.support))(phi)
        phi = jax.tree.map(lambda p, gi: p - lr * gi, phi, g)
      phis.append(phi)
    mean_phi = jax.tree.map(lambda *p: jnp.mean(jnp.stack(p), 0), *phis)
    expected = jax.tree.map(lambda t, p: t + epsilon * (p - t), theta, mean_phi)
    chex.assert_trees_all_close(new_state.theta['model'], expected, rtol=1e-5, atol=1e-6)


class MetaSGDTest(parameterized.TestCase):

  def test_learning_rates_are_meta_learned(self):
    learner = helpers.learner('metasgd', inner_lr=0.01, inner_steps=2)
    tasks = helpers.sinusoid_tasks()
    theta = helpers.init(learner, tasks)
    chex.assert_trees_all_equal_structs(theta['inner_lr'], theta['model'])
    grads = jax.grad(lambda t: learner.outer_loss(t, helpers.first(tasks), KEY)[0])(theta)
    for leaf in jax.tree.leaves(grads['inner_lr']):
      self.assertGreater(float(jnp.max(jnp.abs(leaf))), 0.0)

  def test_per_parameter_rates_scale_the_step(self):
    learner = helpers.learner('metasgd', inner_lr=0.01, inner_steps=1)
    model = MLP(hidden=(8, 8))
    tasks = helpers.sinusoid_tasks()
    task = helpers.first(tasks)
    theta = helpers.init(learner, tasks)
    theta['inner_lr'] = jax.tree.map(
        lambda v: jax.random.uniform(KEY, v.shape, minval=0.0, maxval=0.1), theta['inner_lr'])
    g = jax.grad(lambda v: split_loss(model, mse, v, task.support))(theta['model'])
    expected = jax.tree.map(lambda p, a, gi: p - a * gi, theta['model'], theta['inner_lr'], g)
    chex.assert_trees_all_close(learner.adapt(theta, task.support, KEY).params, expected,
                                rtol=1e-5)


class PartialAdaptationTest(parameterized.TestCase):
  """ANIL adapts only the head, BOIL only the body; both meta-learn every parameter."""

  @parameterized.parameters(('anil', 'head', 'layers_0'), ('boil', 'layers_0', 'head'))
  def test_inner_loop_adapts_only_its_part_and_the_rest_is_meta_learned(self, name, adapted,
                                                                          frozen):
    learner = helpers.learner(name, inner_lr=0.1, inner_steps=3)
    tasks = helpers.sinusoid_tasks()
    theta = helpers.init(learner, tasks)
    phi = learner.adapt(theta, helpers.first(tasks).support, KEY).params
    unchanged = [k for k in phi['params'] if (k == 'head') == (frozen == 'head')]
    for key in unchanged:
      chex.assert_trees_all_equal(phi['params'][key], theta['model']['params'][key])
    self.assertGreater(float(optax.tree.norm(jax.tree.map(
        jnp.subtract, phi['params'][adapted], theta['model']['params'][adapted]))), 0)
    grads = jax.grad(lambda t: learner.outer_loss(t, helpers.first(tasks), KEY)[0])(theta)
    self.assertGreater(float(optax.tree.norm(grads['model']['params'][frozen])), 0)
