"""TaskNorm-I (`--batch_norm=tasknorm`): its two limits, its gradient, and no query leakage.

The layer is checked against independent computations (alpha near 1 is
`BatchStatNorm` over the context rows, alpha near 0 is instance norm); the
learners built on it must give each query the prediction it gets alone and in
any order, since its statistics come from the support set and itself.
"""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms, losses
from metajax.models import BatchStatNorm, Conv4, ResNet12, TaskNormI
from tests import helpers
from tests.test_masks import episode, padded

KEY = jax.random.PRNGKey(0)


def with_blend(variables, offset):
  """`variables` of a `TaskNormI` with alpha = sigmoid(offset) at any context size."""
  params = dict(variables['params'], alpha_scale=jnp.zeros(()), alpha_offset=jnp.asarray(offset))
  return {'params': params}


class TaskNormLayerTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.x = 3.0 + 2.0 * jax.random.normal(KEY, (7, 5, 5, 4))
    self.mask = jnp.array([True, False, True, True, False, False, True])
    self.norm = TaskNormI()
    self.variables = self.norm.init(KEY, self.x, mask=self.mask)

  def test_alpha_one_is_batch_norm_over_the_context_rows(self):
    out = self.norm.apply(with_blend(self.variables, 30.0), self.x, mask=self.mask)
    batch_norm = BatchStatNorm()
    expected = batch_norm.apply(batch_norm.init(KEY, self.x), self.x, mask=self.mask)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  def test_alpha_zero_is_instance_norm(self):
    out = self.norm.apply(with_blend(self.variables, -30.0), self.x, mask=self.mask)
    mean = self.x.mean((1, 2), keepdims=True)
    expected = (self.x - mean) / jnp.sqrt(self.x.var((1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  def test_the_blend_is_the_moments_of_the_mixture(self):
    # alpha = 1/2 at initialisation: each row's mean and variance are those of
    # the equal mixture of the context rows' values and its own.
    out = self.norm.apply(self.variables, self.x, mask=self.mask)
    context = self.x[self.mask].transpose(3, 0, 1, 2).reshape(4, -1)
    for row in (0, 1):
      own = self.x[row].transpose(2, 0, 1).reshape(4, -1)
      n_ctx, n_own = context.shape[1], own.shape[1]
      weights = jnp.concatenate([jnp.full(n_ctx, 0.5 / n_ctx), jnp.full(n_own, 0.5 / n_own)])
      values = jnp.concatenate([context, own], 1)
      mean = values @ weights
      var = jnp.square(values - mean[:, None]) @ weights
      expected = (self.x[row] - mean) / jnp.sqrt(var + 1e-5)
      np.testing.assert_allclose(out[row], expected, rtol=1e-4, atol=1e-4)

  def test_alpha_follows_the_context_size(self):
    variables = {'params': dict(self.variables['params'], alpha_scale=jnp.asarray(1.0),
                                alpha_offset=jnp.asarray(-4.0))}  # alpha = sigmoid(n - 4)
    small = self.norm.apply(variables, self.x, mask=self.mask.at[2:].set(False))  # n = 1
    large = self.norm.apply(variables, self.x, mask=jnp.ones(7, bool))  # n = 7
    instance = self.norm.apply(with_blend(self.variables, -30.0), self.x, mask=self.mask)
    # With one context row, alpha = 0.05: close to instance norm; with seven, far from it.
    self.assertLess(float(jnp.abs(small[0] - instance[0]).max()),
                    float(jnp.abs(large[0] - instance[0]).max()))

  def test_channels_first_is_the_same_function(self):
    first = self.norm.apply(self.variables, jnp.moveaxis(self.x, -1, 0), channel_axis=0,
                            mask=self.mask)
    last = self.norm.apply(self.variables, self.x, mask=self.mask)
    np.testing.assert_allclose(jnp.moveaxis(first, 0, -1), last, rtol=1e-5, atol=1e-5)

  def test_resnet12_takes_it_in_every_block(self):
    model = ResNet12(out=3, channels=(4, 4, 4, 4), batch_norm='tasknorm')
    x = jax.random.normal(KEY, (6, 16, 16, 1))
    variables = model.init(KEY, x, mask=jnp.arange(6) < 3)
    blends = [p for p in jax.tree_util.tree_leaves_with_path(variables)
              if 'alpha_offset' in jax.tree_util.keystr(p[0])]
    self.assertLen(blends, 4 * 4)  # three convolutions and a shortcut per block
    self.assertEqual(model.apply(variables, x, mask=jnp.arange(6) < 3).shape, (6, 3))

  def test_flat_features_are_refused(self):
    with self.assertRaisesRegex(ValueError, 'TaskNormI normalises images'):
      self.norm.init(KEY, jnp.ones((4, 8)))


class TaskNormGradientTest(helpers.Float64TestCase):

  def test_gradient_of_blend_and_affine_parameters_matches_finite_differences(self):
    x = 1.0 + jax.random.normal(KEY, (6, 4, 4, 3), jnp.float64)
    mask = jnp.array([True, True, False, True, False, True])
    norm = TaskNormI()
    params = jax.tree.map(lambda v: v + 0.3, norm.init(KEY, x, mask=mask)['params'])
    target = jax.random.normal(jax.random.PRNGKey(1), x.shape, jnp.float64)
    loss = lambda p: jnp.sum(jnp.tanh(norm.apply({'params': p}, x, mask=mask)) * target)
    grads = helpers.check_gradient(loss, params)
    self.assertGreater(abs(float(grads['alpha_scale'])), 1e-6)
    # ... and of the input, through both kinds of moments.
    helpers.check_gradient(lambda v: loss(params) + jnp.sum(norm.apply({'params': params}, v,
                                                                        mask=mask) ** 3), x)


class TaskNormLearnerTest(parameterized.TestCase):
  """Query predictions of learners on a Conv4 with TaskNorm-I layers."""

  def predictions(self, name, query_x, batch_norm='tasknorm'):
    model = Conv4(out=3, channels=(4, 4, 4, 4), batch_norm=batch_norm)
    learner = {
        'maml': lambda: algorithms.maml(model, losses.cross_entropy,
                                        inner_optimizer=optax.sgd(0.3)),
        'protonet': lambda: algorithms.protonet(model, losses.cross_entropy),
    }[name]()
    task = episode()
    theta = learner.init(KEY, task)
    return learner.predict(theta, task.support, query_x, KEY)

  def test_protonet_queries_permuted_or_alone_are_predicted_the_same(self):
    self.check_queries_permuted_or_alone_are_predicted_the_same('protonet')

  @pytest.mark.slow
  def test_maml_queries_permuted_or_alone_are_predicted_the_same(self):
    self.check_queries_permuted_or_alone_are_predicted_the_same('maml')

  def check_queries_permuted_or_alone_are_predicted_the_same(self, name):
    query_x = episode().query.x.astype(jnp.float32)
    together = self.predictions(name, query_x)
    order = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(self.predictions(name, query_x[order]), together[order],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(self.predictions(name, query_x[:2]), together[:2],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(self.predictions(name, query_x[4:5]), together[4:5],
                               rtol=1e-5, atol=1e-5)
    # Transductive batch norm fails the same check: a query set of 2 moves predictions.
    transductive = self.predictions(name, query_x, 'transductive')
    self.assertGreater(float(jnp.abs(self.predictions(name, query_x[:2], 'transductive')
                                     - transductive[:2]).max()), 1e-3)

  @pytest.mark.slow
  def test_padded_episode_gives_the_same_meta_gradient(self):
    with jax.enable_x64(True):
      model = Conv4(out=3, channels=(4, 4, 4, 4), batch_norm='tasknorm')
      learner = algorithms.protonet(model, losses.cross_entropy)
      task = episode()
      theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, task))
      grad = jax.grad(learner.outer_loss, has_aux=True)
      (g, aux), (g_pad, aux_pad) = grad(theta, task, KEY), grad(theta, padded(task), KEY)
      np.testing.assert_allclose(aux_pad['query_loss'], aux['query_loss'], rtol=1e-10)
      for a, b in zip(jax.tree.leaves(g_pad), jax.tree.leaves(g)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
      self.assertGreater(float(optax.tree.norm(g)), 1e-6)

  @pytest.mark.slow
  def test_trains_resumes_and_predicts_on_class_folders(self):
    helpers.check_folders_run(self, 'protonet', batch_norm='tasknorm')


if __name__ == '__main__':
  absltest.main()
