"""Transductive fine-tuning: its start, its steps against an independent loop, its transduction."""

import os

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms, cli, losses
from metajax.algorithms.transductive import COSINE_SCALE
from metajax.config import Config
from metajax.models import MLP, Conv4
from metajax.types import Split
from tests import helpers
from tests.test_masks import episode, padded

KEY = jax.random.PRNGKey(0)


def learner(model=None, lr=0.01, steps=3, **kwargs):
  model = model or MLP(hidden=(16,), out=3)
  return algorithms.transductive(model, losses.cross_entropy, pretrain_classes=7,
                                 inner_optimizer=optax.adam(lr), inner_steps=steps, **kwargs)


def normalise(v):
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


class TransductiveTest(helpers.Float64TestCase):

  def setUp(self):
    super().setUp()
    self.task = helpers.gaussian_task(ways=3, shots=2, query=4, dim=6)
    self.model = MLP(hidden=(16,), out=3)

  def test_zero_steps_is_a_cosine_prototype_classifier(self):
    l = learner(self.model)
    theta = l.init(KEY, self.task)
    embed = lambda x: self.model.apply(theta['model'], x, method='embed')
    f = normalise(embed(self.task.support.x))
    prototypes = normalise(jnp.stack([f[self.task.support.y == c].mean(0) for c in range(3)]))
    expected = COSINE_SCALE * normalise(embed(self.task.query.x)) @ prototypes.T
    got = l.predict(theta, self.task.support, self.task.query.x, KEY, 0)
    np.testing.assert_allclose(got[:, :3], expected, rtol=1e-10)
    self.assertTrue(bool(jnp.all(got[:, 3:] <= -1e8)))  # support rows 3..5 name no class

  def test_steps_are_adam_on_support_cross_entropy_plus_query_entropy(self):
    # An independent loop: optax's Adam on the objective written out here.
    steps, lr, weight = 4, 0.02, 0.7
    l = learner(self.model, lr=lr, steps=steps, entropy_weight=weight)
    theta = l.init(KEY, self.task)
    support, query_x = self.task.support, self.task.query.x
    f = normalise(self.model.apply(theta['model'], support.x, method='embed'))
    head = jnp.stack([f[support.y == c].mean(0) for c in range(3)]).T  # [d, 3]

    def scores(params, x):
      features = self.model.apply(params['model'], x, method='embed')
      return COSINE_SCALE * normalise(features) @ (head_cols := params['head']) / jnp.linalg.norm(
          head_cols, axis=0)

    def objective(params):
      p = jax.nn.softmax(scores(params, query_x))
      entropy = -jnp.mean(jnp.sum(p * jnp.log(p), -1))
      return losses.cross_entropy(scores(params, support.x), support.y) + weight * entropy

    params, opt = {'model': theta['model'], 'head': head}, optax.adam(lr, eps_root=0.0)
    state = opt.init(params)
    for _ in range(steps):
      updates, state = opt.update(jax.grad(objective)(params), state)
      params = optax.apply_updates(params, updates)
    got = l.predict(theta, support, query_x, KEY)
    np.testing.assert_allclose(got[:, :3], scores(params, query_x), rtol=1e-8, atol=1e-10)
    self.assertGreater(float(jnp.abs(got[:, :3] - l.predict(theta, support, query_x, KEY,
                                                             0)[:, :3]).max()), 1e-3)

  def test_a_query_input_changes_the_others_predictions_through_the_entropy(self):
    l = learner(self.model, lr=0.05, steps=5)
    theta = l.init(KEY, self.task)
    query_x = self.task.query.x
    changed = query_x.at[0].set(query_x[0] * 4.0 + 2.0)
    move = lambda lrn: float(jnp.abs(lrn.predict(theta, self.task.support, changed, KEY)[1:]
                                     - lrn.predict(theta, self.task.support, query_x, KEY)[1:]).max())
    self.assertTrue(l.transductive)
    self.assertGreater(move(l), 1e-4)
    # Without the entropy term (and no batch norm in an MLP) nothing leaks.
    self.assertLess(move(learner(self.model, lr=0.05, steps=5, entropy_weight=0.0)), 1e-10)

  def test_naming_transductive_and_omniglot_gives_the_presets_settings(self):
    path = os.path.join(helpers.REPO, 'experiments', 'configs',
                        'omniglot_transductive_5w1s.flags')
    config = Config(algorithm='transductive', dataset='omniglot')
    self.assertEqual(config.validate(), cli.config_from_flagfile(path))
    self.assertEqual((config.num_steps, config.meta_batch_size, config.eval_inner_steps),
                     (3000, 128, (0, 25)))  # Baseline's pre-training

  def test_negative_entropy_weight_is_refused_naming_the_flag(self):
    with self.assertRaisesRegex(ValueError, 'entropy_weight'):
      Config(dataset='omniglot', algorithm='transductive', entropy_weight=-0.5)
    with self.assertRaisesRegex(ValueError, 'entropy_weight=-0.5'):
      learner(entropy_weight=-0.5)


class TransductiveImagesTest(absltest.TestCase):

  @pytest.mark.slow
  def test_padding_changes_no_prediction(self):
    with jax.enable_x64(True):
      l = learner(Conv4(out=3, channels=(4, 4, 4, 4), batch_norm='support'), steps=2)
      task = episode()
      theta = jax.tree.map(lambda v: v.astype(jnp.float64), l.init(KEY, task))
      pad = padded(task)
      plain = l.predict(theta, task.support, task.query.x, KEY)
      masked = l.predict(theta, pad.support, pad.query.x, KEY, query_mask=pad.query.mask)
      # Columns are classes 0..S-1; the 3 real classes come first in both. The
      # padded episode holds the real queries in another order: match them.
      real = pad.query.x[pad.query.mask]
      order = [int(jnp.argmin(jnp.abs(task.query.x - r).sum((1, 2, 3)))) for r in real]
      np.testing.assert_allclose(masked[pad.query.mask][:, :3], plain[np.array(order), :3],
                                 rtol=1e-8, atol=1e-10)
      self.assertTrue(bool(jnp.all(masked[:, 3:] <= -1e8)))

  @pytest.mark.slow
  def test_trains_resumes_and_predicts_on_class_folders(self):
    helpers.check_folders_run(self, 'transductive', inner_steps=2, eval_inner_steps=(2,))


if __name__ == '__main__':
  absltest.main()
