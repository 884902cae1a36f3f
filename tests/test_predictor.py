"""The model-based learner: a network predicts the task's head from its support set."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms
from metajax import step
from metajax.algorithms.protonet import prototype_logits
from metajax.algorithms import ALGORITHMS
from metajax.data.sinusoid import SinusoidFamily
from metajax.losses import cross_entropy, mse
from metajax.models import MLP, Conv4
from tests import helpers
from tests.helpers import image_tasks

KEY = jax.random.PRNGKey(0)


def _classifier(head='cosine', inner_steps=0, ways=3):
  model = Conv4(out=ways, channels=(8,) * 4)
  learner = algorithms.predictor(model, cross_entropy, inner_optimizer=optax.sgd(0.1),
                                 inner_steps=inner_steps, predictor_head=head)
  return model, learner


class PredictorTest(parameterized.TestCase):

  @parameterized.parameters(('cosine', 0), ('dot', 0), ('euclidean', 2))
  def test_shapes_and_gradients(self, head, inner_steps):
    _, learner = _classifier(head, inner_steps)
    tasks = image_tasks(ways=3, shots=2, query=2)
    task = helpers.first(tasks)
    theta = learner.init(KEY, task)
    logits = learner.predict(theta, task.support, task.query.x, KEY)
    self.assertEqual(logits.shape, (6, 6))  # 6 queries; one column per support example
    self.assertTrue(np.all(np.asarray(logits[:, 3:]) == -1e9))  # classes 3..5 absent
    grads = jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0])(theta)
    chex.assert_tree_all_finite(grads)
    self.assertGreater(float(optax.tree.norm(grads['predictor']['kernel'])), 0)
    self.assertGreater(float(optax.tree.norm(grads['model'])), 0)

  @pytest.mark.slow
  def test_class_mean_predictor_with_euclidean_head_is_a_protonet(self):
    model, learner = _classifier('euclidean', 0)
    tasks = image_tasks(ways=3, shots=2, query=2)
    task = helpers.first(tasks)
    theta = learner.init(KEY, task)  # the predictor starts as the identity map
    chex.assert_trees_all_equal(theta['predictor']['kernel'], jnp.eye(8))
    embed = lambda x: model.apply(theta['model'], x, method='embed')
    expected = prototype_logits(embed(task.support.x), task.support.y, embed(task.query.x))
    got = learner.predict(theta, task.support, task.query.x, KEY)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    protonet = algorithms.protonet(model, cross_entropy)
    np.testing.assert_allclose(got, protonet.predict(
        {'model': theta['model']}, task.support, task.query.x, KEY), rtol=1e-5, atol=1e-4)

  def test_cosine_head_equals_an_independent_computation(self):
    model, learner = _classifier('cosine', 0)
    task = helpers.first(image_tasks(ways=3, shots=2, query=2))
    theta = learner.init(KEY, task)
    theta['predictor']['kernel'] = theta['predictor']['kernel'] * 0.5 + 0.01
    f = lambda x: np.asarray(model.apply(theta['model'], x, method='embed'), np.float64)
    fs, fq, ys = f(task.support.x), f(task.query.x), np.asarray(task.support.y)
    means = np.stack([fs[ys == c].mean(0) for c in range(3)])
    w = means @ np.asarray(theta['predictor']['kernel']) + np.asarray(theta['predictor']['bias'])
    cos = (fq / np.linalg.norm(fq, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)).T
    got = learner.predict(theta, task.support, task.query.x, KEY)
    np.testing.assert_allclose(got[:, :3], 10.0 * cos, rtol=1e-4, atol=1e-4)

  @pytest.mark.slow
  def test_refinement_steps_lower_the_support_loss_and_are_differentiated(self):
    _, learner = _classifier('dot', 3)
    task = helpers.first(image_tasks(ways=3, shots=2, query=2))
    theta = learner.init(KEY, task)
    loss = lambda steps: float(cross_entropy(
        learner.predict(theta, task.support, task.support.x, KEY, steps), task.support.y))
    self.assertLess(loss(3), loss(0))
    one_shot = algorithms.predictor(Conv4(out=3, channels=(8,) * 4), cross_entropy,
                                    inner_optimizer=optax.sgd(0.1), inner_steps=0, predictor_head='dot')
    g3 = jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0])(theta)
    g0 = jax.grad(lambda t: one_shot.outer_loss(t, task, KEY)[0])(theta)
    self.assertFalse(np.allclose(g3['predictor']['kernel'], g0['predictor']['kernel']))

  def test_regression_predicts_the_head_from_the_points(self):
    learner = algorithms.predictor(MLP(hidden=(16, 16)), mse, inner_steps=0)
    tasks = helpers.sinusoid_tasks(num_tasks=4, shots=10, query=10)
    opt = optax.adam(3e-3)
    state = step.create_train_state(learner, opt, KEY, helpers.first(tasks))
    meta_step = step.make_meta_train_step(learner, opt, donate=False)
    family = SinusoidFamily()
    held_out = family.sample(jax.random.PRNGKey(7), 100, 10, 20)
    query_mse = lambda theta: float(jnp.mean(jax.vmap(
        lambda t: learner.outer_loss(theta, t, KEY)[0])(held_out)))
    before = query_mse(state.theta)
    for i in range(300):
      state, _ = meta_step(state, family.sample(jax.random.PRNGKey(i), 25, 10, 10), KEY)
    after = query_mse(state.theta)
    self.assertLess(after, 0.5 * before)
    predictions = learner.predict(state.theta, helpers.first(held_out).support,
                                  helpers.first(held_out).query.x, KEY)
    self.assertEqual(predictions.shape, (20, 1))

  def test_bad_head_and_steps_name_their_flag(self):
    with self.assertRaisesRegex(ValueError, r"^predictor_head='l2': choose one of cosine, dot, euclidean"):
      algorithms.predictor(MLP(), mse, predictor_head='l2')
    with self.assertRaisesRegex(ValueError, r"--predictor_head='l2'"):
      ALGORITHMS['predictor'].section(predictor_head='l2')
    ALGORITHMS['predictor'].section(inner_steps=0)
    with self.assertRaisesRegex(ValueError, r'--inner_steps=0'):
      ALGORITHMS['maml'].section(inner_steps=0)
