"""Conv4, Prototypical Networks, and every algorithm on image tasks."""

import os

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms, loop, step
from metajax.config import Config
from metajax.losses import accuracy, cross_entropy
from metajax.algorithms.protonet import prototype_logits
from metajax.models import BatchStatNorm, Conv4, ResNet12
from metajax.models.conv import Conv3x3, max_pool_2x2
from metajax.types import Split
from tests import helpers
from tests.helpers import image_tasks

KEY = jax.random.PRNGKey(0)


def param_count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


class Conv4Test(parameterized.TestCase):

  @parameterized.parameters(
      # (input side, channels, ways, features, parameters)
      (28, 64, 5, 64, 640 + 3 * 36928 + 4 * 128 + 64 * 5 + 5),
      (28, 64, 20, 64, 640 + 3 * 36928 + 4 * 128 + 64 * 20 + 20),
      (84, 32, 5, 800, (27 * 32 + 32) + 3 * (9 * 32 * 32 + 32) + 4 * 64 + 800 * 5 + 5),
  )
  def test_shapes_and_parameter_counts(self, side, channels, ways, features, count):
    model = Conv4(out=ways, channels=(channels,) * 4)
    x = jnp.zeros((7, side, side, 3 if side == 84 else 1))
    variables = model.init(KEY, x)
    self.assertEqual(param_count(variables), count)
    chex.assert_shape(model.apply(variables, x, method='embed'), (7, features))
    chex.assert_shape(model.apply(variables, x), (7, ways))

  def test_resnet12_shapes_and_parameter_count(self):
    model = ResNet12(out=5)
    x = jnp.zeros((2, 84, 84, 3))
    variables = jax.eval_shape(model.init, KEY, x)
    expected, cin = 0, 3
    for c in (64, 160, 320, 640):
      expected += 9 * cin * c + 2 * 9 * c * c + cin * c + 4 * 2 * c  # convs, shortcut, norms
      cin = c
    expected += 16000 * 5 + 5
    self.assertEqual(param_count(variables), expected)
    self.assertBetween(expected, 12_000_000, 12_600_000)
    small = ResNet12(out=5, channels=(8, 8, 8, 8))
    v = small.init(KEY, x)
    chex.assert_shape(small.apply(v, x, method='embed'), (2, 5 * 5 * 8))
    chex.assert_shape(small.apply(v, x), (2, 5))

  def test_batch_norm_uses_the_statistics_of_the_batch(self):
    x = 3.0 + 2.0 * jax.random.normal(KEY, (6, 5, 5, 4))
    norm = BatchStatNorm()
    y = norm.apply(norm.init(KEY, x), x)
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var((0, 1, 2)), 1, atol=1e-3)

  def test_conv3x3_matches_flax_conv(self):
    x = jax.random.normal(KEY, (2, 9, 7, 5))
    ours = Conv3x3(4)
    variables = ours.init(KEY, x)
    reference = nn.Conv(4, (3, 3), padding='SAME')
    np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x),
                               rtol=1e-5, atol=1e-5)

  @parameterized.parameters(1, 3)
  def test_channels_first_conv_and_norm_match_channels_last(self, cin):
    x = jax.random.normal(KEY, (2, 3, 9, 7, cin))
    conv = Conv3x3(4)
    variables = conv.init(KEY, x)
    reference = nn.Conv(4, (3, 3), padding='SAME')
    y = conv.apply(variables, x, channels_first_out=True)
    chex.assert_shape(y, (4, 2, 3, 9, 7))
    np.testing.assert_allclose(jnp.moveaxis(y, 0, -1), reference.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    norm = BatchStatNorm()
    params = {'params': {'scale': jnp.arange(1.0, 5.0), 'bias': -jnp.arange(4.0)}}
    np.testing.assert_allclose(jnp.moveaxis(norm.apply(params, y, channel_axis=0), 0, -1),
                               norm.apply(params, jnp.moveaxis(y, 0, -1)), rtol=1e-5, atol=1e-5)

  @parameterized.parameters((28, 1), (20, 3))
  @pytest.mark.slow
  def test_conv4_formulations_agree_with_gradients(self, side, cin):
    x = jax.random.normal(KEY, (6, side, side, cin))
    fast, plain = Conv4(out=3, channels=(8,) * 4), Conv4(out=3, channels=(8,) * 4,
                                                          thin_input_channels_first=False)
    variables = fast.init(KEY, x)
    loss = lambda model: lambda v: jnp.sum(jnp.sin(model.apply(v, x)))
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(jax.grad(loss(fast))(variables),
                                jax.grad(loss(plain))(variables), rtol=1e-4, atol=1e-5)

  @parameterized.parameters(28, 7, 3)
  def test_max_pool_matches_flax(self, side):
    x = jax.random.normal(KEY, (2, side, side, 3))
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
    loss = lambda pool: lambda x: jnp.sum(jnp.sin(pool(x)))
    np.testing.assert_array_equal(jax.grad(loss(max_pool_2x2))(x),
                                  jax.grad(loss(lambda x: nn.max_pool(x, (2, 2), (2, 2))))(x))
    infinite = x.at[0, 0, 0, 0].set(-jnp.inf).at[0, 0, 1, 1].set(jnp.inf).at[0, 1, 0, 1].set(
        jnp.inf)  # -inf beside the max, and a window with two +inf
    np.testing.assert_array_equal(max_pool_2x2(infinite),
                                  nn.max_pool(infinite, (2, 2), strides=(2, 2)))

  @pytest.mark.slow
  def test_compiled_inner_steps_equal_eager_ones(self):
    # With `.max()` differentiated through `x == max(x)`, XLA (jax 0.10.2 on
    # this CPU) compiled these 3 unrolled steps on 8x8 inputs to losses up to
    # 0.03 off the same steps run eagerly at 17 of 60 points (float64); see
    # models/conv.py: max_pool_2x2.
    self.addCleanup(jax.config.update, 'jax_enable_x64', jax.config.jax_enable_x64)
    jax.config.update('jax_enable_x64', True)
    model = Conv4(out=3, channels=(4, 4, 4))
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(3, 8, 8, 1))), jnp.arange(3)
    variables = jax.tree.map(lambda v: v.astype(jnp.float64), model.init(KEY, x))
    direction = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape)), variables)
    loss = lambda v: cross_entropy(model.apply(v, x), y)

    def steps(s):
      v, losses = jax.tree.map(lambda a, d: a + s * d, variables, direction), []
      for _ in range(3):
        value, grads = jax.value_and_grad(loss)(v)
        losses.append(value)
        v = jax.tree.map(lambda p, g: p - 0.3 * g, v, grads)
      return jnp.stack(losses)

    compiled = jax.jit(steps)
    for s in np.linspace(0.0, 1e-2, 60):
      np.testing.assert_allclose(compiled(s), steps(s), rtol=1e-9)

  def test_max_pool_gradient_goes_to_one_element_of_a_tied_window(self):
    x = jnp.zeros((1, 2, 4, 1)).at[0, 1, 3, 0].set(1.0)  # window 0 all tied, window 1 not
    grads = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * jnp.asarray([2.0, 3.0])[:, None]))(x)
    np.testing.assert_array_equal(grads[0, :, :, 0], [[2, 0, 0, 0], [0, 0, 0, 3]])


class ProtoNetTest(parameterized.TestCase):

  def test_logits_match_an_independent_computation(self):
    rng = np.random.default_rng(0)
    ways, shots, queries, dim = 4, 3, 5, 6
    support = rng.normal(size=(ways * shots, dim))
    labels = rng.permutation(np.repeat(np.arange(ways), shots))
    query = rng.normal(size=(queries, dim))
    logits = np.asarray(prototype_logits(jnp.asarray(support), jnp.asarray(labels),
                                         jnp.asarray(query)))
    expected = np.zeros((queries, ways))
    for q in range(queries):
      for c in range(ways):
        prototype = support[labels == c].mean(0)
        expected[q, c] = -np.sum((query[q] - prototype) ** 2)
    np.testing.assert_allclose(logits[:, :ways], expected, rtol=1e-5, atol=1e-5)
    self.assertTrue(np.all(logits[:, ways:] <= -1e8))  # absent classes are never chosen

  @pytest.mark.slow
  def test_learner_logits_and_gradient(self):
    model = Conv4(out=3, channels=(8,) * 4)
    learner = algorithms.protonet(model, cross_entropy)
    tasks = image_tasks()
    task = jax.tree.map(lambda v: v[0], tasks)
    theta = learner.init(KEY, task)
    self.assertNotIn('head', theta['model']['params'])
    logits = jax.jit(learner.predict)(theta, task.support, task.query.x, KEY)
    embed = jax.jit(lambda x: model.apply(theta['model'], x, method='embed'))
    zs, zq = embed(task.support.x), embed(task.query.x)
    expected = -jnp.sum((zq[:, None] - zs[None]) ** 2, -1)  # one shot: prototypes = support
    np.testing.assert_allclose(logits[:, :3], expected, rtol=1e-4, atol=1e-4)
    grads = jax.jit(jax.grad(lambda t: learner.outer_loss(t, task, KEY)[0]))(theta)
    self.assertGreater(float(optax.tree.norm(grads)), 0)


class EveryAlgorithmOnImagesTest(parameterized.TestCase):

  @parameterized.parameters(*algorithms.ALGORITHMS)
  @pytest.mark.slow
  @pytest.mark.long
  def test_one_meta_step_on_image_tasks(self, name):
    model = Conv4(out=3, channels=(8,) * 4)
    learner = helpers.learner(name, model=model, loss_fn=cross_entropy, dataset='omniglot',
                              **helpers.usable(name, inner_lr=0.1, inner_steps=2,
                                               pretrain_classes=3))
    tasks = image_tasks()
    opt = optax.adam(1e-3)
    state = step.create_train_state(learner, opt, KEY, jax.tree.map(lambda v: v[0], tasks))
    batch = Split(tasks.support.x[0], tasks.support.y[0]) if learner.batch_loss else tasks
    new_state, metrics = step.make_meta_train_step(learner, opt, donate=False)(state, batch, KEY)
    chex.assert_tree_all_finite((new_state.theta, metrics))
    self.assertGreater(float(metrics['grad_norm']), 0)
    self.assertEqual(int(new_state.nonfinite_step), -1)
    logits = learner.predict(new_state.theta, jax.tree.map(lambda v: v[0], tasks).support,
                             tasks.query.x[0], KEY)
    self.assertEqual(logits.shape[0], 6)
    self.assertBetween(float(accuracy(logits, tasks.query.y[0])), 0.0, 1.0)


@pytest.mark.omniglot
class RealOmniglotTest(parameterized.TestCase):

  @pytest.mark.slow
  @pytest.mark.long
  def test_a_short_protonet_run_is_well_above_chance_and_predicts_raw_105px_drawings(self):
    import zipfile  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from metajax import load_learner  # pylint: disable=g-import-not-at-top
    workdir = self.create_tempdir().full_path
    config = Config(dataset='omniglot', algorithm='protonet', ways=5, shots=1, query=5,
                    eval_query=5, meta_batch_size=1, meta_lr=1e-3, num_steps=60,
                    log_every=20, checkpoint_every=60, eval_tasks=100,
                    data_dir=helpers.OMNIGLOT_DIR)
    result = loop.train_and_evaluate(config, workdir, show_progress=False)
    (record,) = result.records
    self.assertEqual(record['metric'], 'accuracy')
    self.assertEqual(record['num_tasks'], 100)
    self.assertGreater(record['mean'] - record['ci95'], 0.5)  # chance is 0.2
    learner = load_learner(workdir)
    self.assertEqual(learner.step, 60)
    # Five characters of the evaluation set, drawn as in the official release:
    # 105x105 bool, paper True. Drawing 0 is the support, drawings 1-8 the queries.
    with zipfile.ZipFile(os.path.join(helpers.OMNIGLOT_DIR, 'images_evaluation.zip')) as z:
      names = sorted(n for n in z.namelist() if n.endswith('.png'))
      characters = sorted({n.rsplit('/', 1)[0] for n in names})[::97][:5]
      drawings = [[np.asarray(Image.open(z.open(n))) for n in names if n.startswith(c + '/')][:9]
                  for c in characters]
    self.assertEqual(drawings[0][0].shape, (105, 105))
    self.assertEqual(drawings[0][0].dtype, bool)
    labels = np.array([17, -3, 1000, 42, 5])
    support = np.stack([d[0] for d in drawings])
    query = np.stack([im for d in drawings for im in d[1:]])
    truth = np.repeat(labels, 8)
    predicted = learner.predict(support, labels, query)
    self.assertTrue(set(predicted) <= set(labels))
    self.assertGreater(np.mean(predicted == truth), 0.5)  # chance is 0.2
    # The same drawings as uint8, as float, and as RGB give the same answer.
    as_uint8 = lambda a: a.astype(np.uint8) * 255
    np.testing.assert_array_equal(
        learner.predict(as_uint8(support), labels, as_uint8(query)), predicted)
    np.testing.assert_array_equal(
        learner.predict(support.astype(np.float32), labels, query.astype(np.float64)), predicted)
    rgb = lambda a: np.repeat(as_uint8(a)[..., None], 3, -1)
    np.testing.assert_array_equal(learner.predict(rgb(support), labels, rgb(query)), predicted)
    with self.assertRaisesRegex(ValueError, 'one label per support image'):
      learner.predict(support, labels[:3], query)
