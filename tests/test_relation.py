"""Relation Networks: scores against an independent computation, the paper's loss, gradients."""

import os

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import cli
from metajax.algorithms import ALGORITHMS
from metajax.algorithms.relation import relation_loss
from metajax.config import Config
from metajax.losses import cross_entropy
from metajax.models import MLP
from tests import helpers

KEY = jax.random.PRNGKey(0)


task = helpers.gaussian_task


def learner(**settings):
  # The registry's build: the paper's squared-error loss, whatever the objective's.
  return ALGORITHMS['relation'].learner(MLP(hidden=(6,), out=3), cross_entropy, **settings)


class RelationTest(helpers.Float64TestCase):

  def test_scores_are_the_relation_module_on_query_and_class_sum_pairs(self):
    relation = learner(relation_channels=7, relation_hidden=4)
    t = task()
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), relation.init(KEY, t))
    embed = lambda x: np.asarray(MLP(hidden=(6,), out=3).apply(theta['model'], x, method='embed'))
    g = theta['relation']['params']
    layer = lambda h, name: np.maximum(h @ g[name]['kernel'] + g[name]['bias'], 0)
    module = lambda pair: (layer(layer(layer(pair, 'block_0'), 'block_1'), 'hidden')
                           @ g['out']['kernel'] + g['out']['bias'])[0]
    support, query = embed(t.support.x), embed(t.query.x)
    labels = np.asarray(t.support.y)
    sums = [support[labels == c].sum(0) for c in range(3)]  # the paper sums the K shots
    expected = np.array([[module(np.concatenate([q, s])) for s in sums] for q in query])
    phi = relation.adapt(theta, t.support, KEY).params
    logits = np.asarray(relation.apply(theta, phi, t.query.x))
    np.testing.assert_allclose(logits[:, :3], expected, rtol=1e-10)
    np.testing.assert_array_equal(logits[:, 3:], -1e9)  # classes absent from the support
    # The meta-loss is the paper's: squared error of the sigmoid scores against one-hot
    # targets, summed over classes, here averaged over the queries.
    scores = 1 / (1 + np.exp(-expected))
    paper = np.mean(np.sum((scores - np.eye(3)[np.asarray(t.query.y)]) ** 2, 1))
    loss, _ = relation.outer_loss(theta, t, KEY)
    np.testing.assert_allclose(loss, paper, rtol=1e-10)
    np.testing.assert_allclose(relation_loss(jnp.asarray(logits), t.query.y), paper, rtol=1e-10)

  def test_meta_gradient_matches_finite_differences(self):
    relation = learner(relation_hidden=5)
    t = task()
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), relation.init(KEY, t))
    grads = helpers.check_gradient(lambda th: relation.outer_loss(th, t, KEY)[0], theta, seed=3)
    self.assertGreater(float(jnp.abs(grads['relation']['params']['hidden']['kernel']).sum()), 0)

  def test_padding_the_support_set_changes_nothing(self):
    relation = learner()
    helpers.check_padding_changes_nothing(relation, task(), KEY)

  def test_any_number_of_ways_and_settings_out_of_range(self):
    relation = learner()
    theta = relation.init(KEY, task())
    five = task(ways=5)
    self.assertEqual(relation.predict(theta, five.support, five.query.x, KEY).shape, (10, 10))
    with self.assertRaisesRegex(ValueError, r'^--relation_hidden=0: must be a positive integer'):
      ALGORITHMS['relation'].section(relation_hidden=0)
    with self.assertRaisesRegex(ValueError, r'^--relation_channels=0: must be a positive'):
      learner(relation_channels=0)


class RelationRunTest(absltest.TestCase):

  def test_naming_relation_and_omniglot_gives_the_presets_settings(self):
    path = os.path.join(helpers.REPO, 'experiments', 'configs', 'omniglot_relation_5w1s.flags')
    self.assertEqual(Config(algorithm='relation', dataset='omniglot').validate(),
                     cli.config_from_flagfile(path))

  @pytest.mark.slow
  def test_trains_on_class_folders_resumes_and_predicts_files(self):
    helpers.check_folders_run(self, 'relation', relation_channels=8, relation_hidden=4)


if __name__ == '__main__':
  absltest.main()
