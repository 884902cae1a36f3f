"""Matching Networks: the attention against an independent computation, float64 gradients."""


from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms import ALGORITHMS
from metajax.algorithms.matching import matching_logits
from metajax.losses import cross_entropy
from metajax.models import MLP
from tests import helpers

KEY = jax.random.PRNGKey(0)


task = helpers.gaussian_task


class MatchingTest(helpers.Float64TestCase):

  def test_logits_are_the_log_attention_each_class_receives(self):
    rng = np.random.default_rng(1)
    support, query = rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
    labels = np.array([0, 2, 0, 2, 1, 2])
    mask = np.array([True, True, True, True, True, False])  # the last row is padding
    logits = np.asarray(matching_logits(jnp.asarray(query), jnp.asarray(support),
                                        jnp.asarray(labels), 2.0, jnp.asarray(mask)))
    for q in range(3):
      cos = np.array([query[q] @ s / np.linalg.norm(query[q]) / np.linalg.norm(s)
                      for s in support[:5]])
      attention = np.exp(2.0 * cos) / np.exp(2.0 * cos).sum()
      for c in range(3):
        np.testing.assert_allclose(logits[q, c], np.log(attention[labels[:5] == c].sum()),
                                   rtol=1e-10)
    np.testing.assert_array_equal(logits[:, 3:], -1e9)  # classes absent from the support
    # The softmax of log p is p: the loss is the paper's -log p(y | x, S).
    np.testing.assert_allclose(np.exp(logits[:, :3]).sum(1), 1.0, rtol=1e-10)

  @parameterized.parameters(False, True)
  def test_meta_gradient_matches_finite_differences(self, fce):
    learner = ALGORITHMS['matching'].learner(MLP(hidden=(6,), out=3), cross_entropy,
                                             matching_fce=fce, matching_fce_steps=2,
                                             matching_scale=3.0)
    t = task()
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, t))
    self.assertEqual('fce' in theta, fce)
    helpers.check_gradient(lambda th: learner.outer_loss(th, t, KEY)[0], theta, seed=2)

  def test_padding_the_support_set_changes_nothing(self):
    learner = ALGORITHMS['matching'].learner(MLP(hidden=(6,), out=3), cross_entropy,
                                             matching_fce=True, matching_fce_steps=2)
    helpers.check_padding_changes_nothing(learner, task(), KEY)

  def test_any_number_of_ways_and_settings_out_of_range(self):
    learner = ALGORITHMS['matching'].learner(MLP(hidden=(6,), out=3), cross_entropy)
    theta = learner.init(KEY, task())
    five = task(ways=5)
    self.assertEqual(learner.predict(theta, five.support, five.query.x, KEY).shape, (10, 10))
    with self.assertRaisesRegex(ValueError, r'^--matching_scale=0.0: must be > 0'):
      ALGORITHMS['matching'].section(matching_scale=0.0)
    with self.assertRaisesRegex(ValueError, r'^--matching_fce_steps=0: must be a positive'):
      ALGORITHMS['matching'].section(matching_fce_steps=0)


class MatchingRunTest(absltest.TestCase):

  @pytest.mark.slow
  def test_trains_on_class_folders_resumes_and_predicts_files(self):
    helpers.check_folders_run(self, 'matching', matching_fce=True, matching_fce_steps=1)


if __name__ == '__main__':
  absltest.main()
