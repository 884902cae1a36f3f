"""MAML's zeroing trick (`zero_head`, Kao et al. 2022) on a small Conv4 in float64.

Every inner loop starts from a zero head, so a task's labels may be permuted
without changing its losses (without the trick they change); the head's
meta-gradient is zero; the body's matches central differences of the outer
loss (second order: MAML, and MAML++ with its multi-step loss, per-step batch
norm and learned rates) and the query gradient at the adapted weights (first order).
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms
from metajax.algorithms import ALGORITHMS
from metajax.losses import cross_entropy
from metajax.models import Conv4
from metajax.types import Split, Task

KEY = jax.random.PRNGKey(0)
MODEL = Conv4(out=3, channels=(3, 3))


def tiny_task(labels=(0, 1, 2), seed=0):
  rng = np.random.default_rng(seed)
  relabel = np.asarray(labels)
  split = lambda n: Split(jnp.asarray(rng.normal(size=(n, 4, 4, 1))),
                          jnp.asarray(relabel[np.arange(n) % 3]))
  return Task(split(3), split(6))


def max_abs(tree) -> float:
  return max(float(jnp.abs(v).max()) for v in jax.tree.leaves(tree))


class ZeroHeadTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update('jax_enable_x64', True)
    self.addCleanup(jax.config.update, 'jax_enable_x64', False)

  def learner(self, zero_head, first_order=False, algorithm='maml'):
    if algorithm == 'mamlpp':  # every piece on, the multi-step loss still annealing
      return algorithms.mamlpp(MODEL, cross_entropy, inner_lr=0.3, inner_steps=2,
                               msl_steps=10, zero_head=zero_head)
    return algorithms.maml(MODEL, cross_entropy, inner_optimizer=optax.sgd(0.3), inner_steps=2,
                           first_order=first_order, zero_head=zero_head)

  @staticmethod
  def outer_loss(learner, theta, task):
    return learner.outer_loss(theta, task, None, *((3,) if learner.takes_step else ()))

  def theta(self, learner):
    return jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, tiny_task()))

  @parameterized.parameters('maml', 'mamlpp')
  def test_losses_do_not_depend_on_the_order_of_the_labels(self, algorithm):
    task, permuted = tiny_task(), tiny_task(labels=(2, 0, 1))
    for zero_head in (True, False):
      learner = self.learner(zero_head, algorithm=algorithm)
      theta = self.theta(learner)
      (loss, metrics), (loss_p, metrics_p) = (self.outer_loss(learner, theta, t)
                                              for t in (task, permuted))
      if zero_head:
        np.testing.assert_allclose(loss, loss_p, rtol=1e-12)
        np.testing.assert_allclose(metrics['support_loss_before'], np.log(3), rtol=1e-12)
        self.assertEqual(max_abs(theta['model']['params']['head']), 0.0)
      else:  # a random head: relabelling the task changes what it has to undo
        self.assertGreater(abs(float(loss - loss_p)), 1e-4)
        self.assertGreater(abs(float(metrics['support_loss_before'] - np.log(3))), 1e-4)

  @parameterized.parameters('maml', 'mamlpp')
  @pytest.mark.slow
  def test_body_meta_gradient_matches_finite_differences(self, algorithm):
    learner = self.learner(True, algorithm=algorithm)
    theta, task = self.theta(learner), tiny_task()
    grads = jax.grad(lambda t: self.outer_loss(learner, t, task)[0])(theta)
    self.assertEqual(max_abs(grads['model']['params']['head']), 0.0)
    rng = np.random.default_rng(1)
    direction = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape)), theta)
    along = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads),
                                                      jax.tree.leaves(direction)))
    self.assertGreater(abs(along), 1e-3)
    self.assertAlmostEqual(along, self.central_difference(learner, theta, direction, task),
                           places=7)

  @pytest.mark.slow
  def test_mamlpp_every_inner_loop_starts_from_zero_and_uses_the_heads_rates(self):
    learner, task = self.learner(True, algorithm='mamlpp'), tiny_task()
    theta = self.theta(learner)
    grads = jax.grad(lambda t: self.outer_loss(learner, t, task)[0])(theta)
    # Each step's head kernel rate gets a meta-gradient (the bias's first one
    # does not: from a zero head a balanced task's bias gradient is zero).
    self.assertGreater(float(jnp.abs(grads['inner_lr']['head']['kernel']).min()), 1e-6)
    self.assertGreater(abs(float(grads['inner_lr']['head']['bias'][1])), 1e-6)
    rng = np.random.default_rng(2)  # a head that is not zero: the inner loops ignore it
    theta['model']['params']['head'] = jax.tree.map(
        lambda v: jnp.asarray(rng.normal(size=v.shape)), theta['model']['params']['head'])
    for num_steps in (0, 2, 5):  # evaluation with none, the training count, more steps
      losses = learner.adapt(theta, task.support, None, num_steps)[1]
      np.testing.assert_allclose(losses[0], np.log(3), rtol=1e-12)

  def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_body(self):
    learner = self.learner(True, first_order=True)
    theta, task = self.theta(learner), tiny_task()
    grads = jax.grad(lambda t: learner.outer_loss(t, task, None)[0])(theta)
    phi = learner.adapt(theta, task.support, None).params
    self.assertGreater(max_abs(phi['params']['head']), 1e-3)  # adapted from zero
    at_phi = jax.grad(lambda v: cross_entropy(MODEL.apply(v, task.query.x), task.query.y))(phi)
    body = lambda tree: {k: v for k, v in tree['params'].items() if k != 'head'}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14),
                 body(grads['model']), body(at_phi))
    self.assertEqual(max_abs(grads['model']['params']['head']), 0.0)

  def central_difference(self, learner, theta, direction, task, eps=1e-5):
    moved = lambda s: jax.tree.map(lambda t, d: t + s * d, theta, direction)
    loss = lambda t: float(self.outer_loss(learner, t, task)[0])
    return (loss(moved(eps)) - loss(moved(-eps))) / (2 * eps)

  def test_only_the_maml_family_takes_it(self):
    for algorithm in ('maml', 'fomaml', 'mamlpp'):
      self.assertIs(ALGORITHMS[algorithm].section(zero_head=True).zero_head, True)
      self.assertIs(ALGORITHMS[algorithm].section().zero_head, False)
    with self.assertRaisesRegex(ValueError, r'--zero_head=True: --algorithm=anil does not use'):
      ALGORITHMS['anil'].section(zero_head=True)


if __name__ == '__main__':
  absltest.main()
