"""The in-context learner: what a query's prediction may depend on, gradients, padding, runs."""

import os

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import cli
from metajax.algorithms import ALGORITHMS
from metajax.config import Config
from metajax.losses import cross_entropy
from metajax.models import MLP
from metajax.types import Split
from tests import helpers

KEY = jax.random.PRNGKey(0)


task = helpers.gaussian_task


def learner(**settings):
  settings = {'icl_layers': 2, 'icl_heads': 2, 'icl_width': 8, **settings}
  return ALGORITHMS['incontext'].learner(MLP(hidden=(6,), out=3), cross_entropy, **settings)


def float64(tree):
  return jax.tree.map(lambda v: v.astype(jnp.float64), tree)


class InContextTest(helpers.Float64TestCase):

  def test_a_query_depends_on_the_support_set_and_itself_only(self):
    icl = learner()
    t = task(query=3)
    theta = float64(icl.init(KEY, t))
    phi = icl.adapt(theta, t.support, KEY).params
    logits = np.asarray(icl.apply(theta, phi, t.query.x))
    # One query at a time, or the queries in another order: the same logits.
    alone = np.concatenate([icl.apply(theta, phi, t.query.x[i:i + 1]) for i in range(9)])
    np.testing.assert_allclose(alone, logits, rtol=1e-10)
    order = np.random.default_rng(1).permutation(9)
    np.testing.assert_allclose(icl.apply(theta, phi, t.query.x[order]), logits[order],
                               rtol=1e-10)
    # Changing one query changes its own logits and no other's.
    x = t.query.x.at[4].add(3.0)
    changed = np.asarray(icl.apply(theta, phi, x))
    np.testing.assert_allclose(np.delete(changed, 4, 0), np.delete(logits, 4, 0), rtol=1e-10)
    self.assertGreater(np.abs(changed[4, :3] - logits[4, :3]).max(), 1e-6)
    # The support set is a set: its order changes nothing; its contents do.
    order = np.random.default_rng(2).permutation(6)
    shuffled = icl.adapt(theta, Split(t.support.x[order], t.support.y[order]), KEY).params
    # (the codes are drawn per class, so they follow the labels, not the rows)
    np.testing.assert_allclose(icl.apply(theta, shuffled, t.query.x), logits, rtol=1e-10)
    moved = icl.adapt(theta, Split(t.support.x.at[0].add(3.0), t.support.y), KEY).params
    self.assertGreater(np.abs(icl.apply(theta, moved, t.query.x) - logits).max(), 1e-6)
    np.testing.assert_array_equal(logits[:, 3:], -1e9)  # classes absent from the support

  def test_renaming_the_classes_with_their_codes_permutes_the_logits(self):
    icl = learner()
    t = task()
    theta = float64(icl.init(KEY, t))
    phi = icl.adapt(theta, t.support, KEY).params
    rename = np.array([2, 0, 1])  # class c becomes rename[c]
    codes = phi['class_codes'].at[rename].set(phi['class_codes'][:3])
    renamed = {**phi, 'class_codes': codes, 'counts': phi['counts'].at[rename].set(
        phi['counts'][:3])}
    logits = np.asarray(icl.apply(theta, phi, t.query.x))
    np.testing.assert_allclose(np.asarray(icl.apply(theta, renamed, t.query.x))[:, rename],
                               logits[:, :3], rtol=1e-10)

  def test_meta_gradient_matches_finite_differences(self):
    icl = learner()
    t = task()
    theta = float64(icl.init(KEY, t))
    grads = helpers.check_gradient(lambda th: icl.outer_loss(th, t, KEY)[0], theta, seed=5)
    for part in ('embed', 'block_1', 'out'):
      self.assertGreater(float(optax_norm(grads['reader']['params'][part])), 0)

  def test_padding_the_support_set_changes_nothing(self):
    icl = learner()
    helpers.check_padding_changes_nothing(icl, task(), KEY, grad_rtol=1e-9, grad_atol=1e-13)

  def test_any_number_of_ways_and_settings_out_of_range(self):
    icl = learner()
    theta = icl.init(KEY, task())
    five = task(ways=5)
    self.assertEqual(icl.predict(theta, five.support, five.query.x, KEY).shape, (10, 10))
    with self.assertRaisesRegex(ValueError, r'^--icl_layers=0: must be a positive integer'):
      ALGORITHMS['incontext'].section(icl_layers=0)
    with self.assertRaisesRegex(ValueError, r'^--icl_width=10: must be a multiple of '
                                r'--icl_heads=4'):
      learner(icl_width=10, icl_heads=4)
    with self.assertRaisesRegex(ValueError, r'^--icl_width=9: must be even'):
      learner(icl_width=9, icl_heads=3)


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(tree)))


class InContextRunTest(absltest.TestCase):

  def test_naming_incontext_and_omniglot_gives_the_presets_settings(self):
    path = os.path.join(helpers.REPO, 'experiments', 'configs', 'omniglot_incontext_5w1s.flags')
    self.assertEqual(Config(algorithm='incontext', dataset='omniglot').validate(),
                     cli.config_from_flagfile(path))

  @pytest.mark.slow
  def test_trains_on_class_folders_resumes_and_predicts_files(self):
    helpers.check_folders_run(self, 'incontext', icl_width=16, icl_heads=2, icl_layers=1)


if __name__ == '__main__':
  absltest.main()
