"""Padded, masked episodes and batch norm that uses no query statistics.

A variable-size episode is padded to a fixed shape for `jit`, with `Split.mask`
marking its real rows. Padding must change nothing: the loss and the
meta-gradient of the padded episode equal those of the unpadded one (float64,
so that only rounding separates them). With `batch_norm='support'`, a query
input must not influence another query input's prediction.
"""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from metajax import losses
from metajax import algorithms
from metajax.models import BatchStatNorm, Conv4
from metajax.types import Split, Task
import optax
import pytest

KEY = jax.random.PRNGKey(0)
WAYS, SHOTS, QUERY, SIDE = 3, 2, 2, 16


def episode(seed=0):
  """A 3-way 2-shot task of random 16x16 images, float64."""
  rng = np.random.default_rng(seed)
  split = lambda n: Split(jnp.asarray(rng.normal(size=(n, SIDE, SIDE, 1))),
                          jnp.asarray(np.repeat(np.arange(WAYS), n // WAYS).astype(np.int32)))
  return Task(split(WAYS * SHOTS), split(WAYS * QUERY))


def padded(task, extra_support=4, extra_query=3, seed=1):
  """`task` with padding rows (random images, label -1) and masks, the padding interleaved."""
  rng = np.random.default_rng(seed)

  def pad(split, extra):
    n = split.x.shape[0]
    x = jnp.concatenate([split.x, jnp.asarray(rng.normal(size=(extra,) + split.x.shape[1:]))])
    y = jnp.concatenate([split.y, -jnp.ones(extra, jnp.int32)])
    mask = jnp.arange(n + extra) < n
    order = rng.permutation(n + extra)  # padding is not only at the end
    return Split(x[order], y[order], mask[order])

  return Task(pad(task.support, extra_support), pad(task.query, extra_query))


def learners():
  model = Conv4(out=WAYS, channels=(4, 4, 4, 4))
  loss = losses.cross_entropy
  return {
      'maml': algorithms.maml(model, loss, inner_optimizer=optax.sgd(0.3), inner_steps=2),
      'protonet': algorithms.protonet(model, loss),
      'predictor': algorithms.predictor(model, loss, inner_steps=1),
  }


class PaddingTest(parameterized.TestCase):

  @parameterized.parameters('maml', 'protonet', 'predictor')
  @pytest.mark.slow
  @pytest.mark.long
  def test_padded_episode_gives_the_same_loss_and_meta_gradient(self, name):
    with jax.enable_x64(True):
      learner = learners()[name]
      task = episode()
      theta = learner.init(KEY, task)
      theta = jax.tree.map(lambda v: v.astype(jnp.float64), theta)
      grad = jax.grad(learner.outer_loss, has_aux=True)
      (g, aux), (g_pad, aux_pad) = grad(theta, task, KEY), grad(theta, padded(task), KEY)
      np.testing.assert_allclose(aux_pad['query_loss'], aux['query_loss'], rtol=1e-10)
      np.testing.assert_allclose(aux_pad['support_loss_before'], aux['support_loss_before'],
                                 rtol=1e-10)
      for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
      self.assertGreater(float(optax.tree.norm(g)), 1e-6)  # a gradient to compare

  @pytest.mark.slow
  def test_padding_without_its_mask_changes_the_gradient(self):
    # The check above can fail: the same padding, unmasked, changes the result.
    with jax.enable_x64(True):
      learner = learners()['maml']
      task = episode()
      theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, task))
      pad = padded(task)
      unmasked = Task(*(Split(s.x, jnp.maximum(s.y, 0)) for s in pad))
      loss = lambda t: learner.outer_loss(theta, t, KEY)[0]
      self.assertGreater(abs(float(loss(unmasked) - loss(task))), 1e-6)

  def test_masked_batch_norm_equals_batch_norm_of_the_real_rows(self):
    x = 3.0 + 2.0 * jax.random.normal(KEY, (7, 5, 5, 4))
    mask = jnp.array([True, False, True, True, False, False, True])
    norm = BatchStatNorm()
    variables = norm.init(KEY, x)
    np.testing.assert_allclose(norm.apply(variables, x, mask=mask)[mask],
                               norm.apply(variables, x[mask]), rtol=1e-5, atol=1e-5)

  def test_masked_mean_skips_padding_rows(self):
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [jnp.nan, 5.0]])
    labels = jnp.array([0, 1, -1])
    mask = jnp.array([True, True, False])
    self.assertAlmostEqual(float(losses.masked_mean(losses.accuracy, logits, labels, mask)), 1.0)
    np.testing.assert_allclose(losses.masked_mean(losses.cross_entropy, logits, labels, mask),
                               losses.cross_entropy(logits[:2], labels[:2]), rtol=1e-6)


class SupportStatisticsTest(parameterized.TestCase):

  def query_predictions(self, name, batch_norm, query_x):
    model = Conv4(out=WAYS, channels=(4, 4, 4, 4), batch_norm=batch_norm)
    learner = {
        'maml': lambda: algorithms.maml(model, losses.cross_entropy, inner_optimizer=optax.sgd(0.3)),
        'protonet': lambda: algorithms.protonet(model, losses.cross_entropy),
    }[name]()
    task = episode()
    theta = learner.init(KEY, task)
    return learner.predict(theta, task.support, query_x, KEY)

  @parameterized.parameters('maml', 'protonet')
  def test_one_query_image_changes_no_other_prediction(self, name):
    query_x = episode().query.x.astype(jnp.float32)
    changed = query_x.at[0].set(query_x[0] * 5.0 + 3.0)
    before = self.query_predictions(name, 'support', query_x)
    after = self.query_predictions(name, 'support', changed)
    np.testing.assert_allclose(after[1:], before[1:], rtol=1e-5, atol=1e-5)
    self.assertGreater(float(jnp.abs(after[0] - before[0]).max()), 1e-3)
    # Transductive batch norm leaks: the same change moves the other predictions.
    before = self.query_predictions(name, 'transductive', query_x)
    after = self.query_predictions(name, 'transductive', changed)
    self.assertGreater(float(jnp.abs(after[1:] - before[1:]).max()), 1e-3)

  @pytest.mark.slow
  def test_a_query_alone_is_predicted_as_in_its_query_set(self):
    query_x = episode().query.x.astype(jnp.float32)
    together = self.query_predictions('maml', 'support', query_x)
    alone = jnp.concatenate([self.query_predictions('maml', 'support', query_x[i:i + 1])
                             for i in range(len(query_x))])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
