"""MAML++: its meta-gradients in float64 against finite differences, and each piece alone.

A small Conv4 (two blocks of 3 channels, batch norm, 4x4 inputs) in float64:
the meta-gradients of the per-step inner learning rates and of the per-step
batch-norm scales and biases against central differences of the outer loss;
with every piece off, MAML++ is second-order MAML; the multi-step weights
against the loop of the paper's code; derivative-order annealing switches
from the first-order to the second-order meta-gradient at its step.
"""

import glob
import os

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import algorithms, loop, rundir
from metajax.algorithms.mamlpp import multi_step_weights
from metajax.algorithms import ALGORITHMS
from metajax.config import Config
from metajax.losses import cross_entropy
from metajax.models import Conv4
from metajax.step import create_train_state, make_meta_train_step
from metajax.types import Split, Task
from tests import helpers

KEY = jax.random.PRNGKey(0)
MODEL = Conv4(out=3, channels=(3, 3))


def tiny_task(seed=0):
  rng = np.random.default_rng(seed)
  split = lambda n: Split(jnp.asarray(rng.normal(size=(n, 4, 4, 1))), jnp.arange(n) % 3)
  return Task(split(3), split(6))


def paper_weights(epoch, num_steps, msl_epochs):
  """The per-step loss weights of the MAML++ code (`get_per_step_loss_importance_vector`)."""
  weights = np.ones(num_steps) / num_steps
  decay = 1.0 / num_steps / msl_epochs
  floor = 0.03 / num_steps
  for i in range(num_steps - 1):
    weights[i] = max(weights[i] - epoch * decay, floor)
  weights[-1] = min(weights[-1] + epoch * (num_steps - 1) * decay,
                    1.0 - (num_steps - 1) * floor)
  return weights


class MamlPlusPlusTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update('jax_enable_x64', True)
    self.addCleanup(jax.config.update, 'jax_enable_x64', False)
    self.task = tiny_task()

  def learner(self, **kwargs):
    values = dict(inner_steps=3, inner_lr=0.3)
    values.update(kwargs)
    return algorithms.mamlpp(MODEL, cross_entropy, **values)

  @parameterized.parameters(
      dict(msl_steps=0, step=0),      # the last step's loss, second order
      dict(msl_steps=10, step=4),     # the multi-step loss, mid-annealing
  )
  @pytest.mark.slow
  def test_rates_and_batch_norm_gradients_match_finite_differences(self, msl_steps, step):
    learner = self.learner(msl_steps=msl_steps)
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, self.task))
    step = jnp.int32(step)
    loss = jax.jit(lambda t: learner.outer_loss(t, self.task, None, step)[0])
    grads = jax.jit(jax.grad(loss))(theta)
    leaves = {'inner_lr': theta['inner_lr'],
              'norms': {k: v for k, v in theta['model']['params'].items()
                        if k.startswith('norms')}}
    self.assertEqual(theta['model']['params']['norms_0']['scale'].shape, (3, 3))
    self.assertEqual(theta['inner_lr']['convs_0']['kernel'].shape, (3,))
    checked = 0
    for path, _ in jax.tree_util.tree_leaves_with_path(leaves):
      keys = [k.key for k in path]
      where = theta['inner_lr'] if keys[0] == 'inner_lr' else theta['model']['params']
      leaf = where
      for k in keys[1:]:
        leaf = leaf[k]
      g = grads['inner_lr'] if keys[0] == 'inner_lr' else grads['model']['params']
      for k in keys[1:]:
        g = g[k]
      flat = np.asarray(leaf).reshape(-1)
      for index in range(min(flat.size, 4)):
        def moved(eps, keys=keys, index=index):
          def edit(value):
            v = np.array(value).reshape(-1)
            v[index] += eps
            return jnp.asarray(v.reshape(np.shape(value)))
          t = jax.tree.map(lambda v: v, theta)
          node = t['inner_lr'] if keys[0] == 'inner_lr' else t['model']['params']
          for k in keys[1:-1]:
            node = node[k]
          node[keys[-1]] = edit(node[keys[-1]])
          return float(loss(t))
        eps = 1e-6
        numeric = (moved(eps) - moved(-eps)) / (2 * eps)
        analytic = float(np.asarray(g).reshape(-1)[index])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9, err_msg=str(keys))
        checked += 1
    self.assertGreater(checked, 20)
    # Every step's rates get a meta-gradient; so does every step's batch norm.
    for rates in jax.tree.leaves(grads['inner_lr']):
      self.assertTrue(np.all(np.abs(np.asarray(rates)) > 0), rates)
    self.assertTrue(np.all(np.abs(np.asarray(grads['model']['params']['norms_1']['scale'])) > 0))

  def test_compiled_inner_loop_equals_a_python_loop_near_every_point(self):
    # The per-step batch norm's parameters enter the rolled scan as per-step
    # inputs; with the max-pool differentiated through `x == max(x)` the
    # compiled second step's loss (jax 0.10.2, this CPU) was off the eager
    # one by up to 0.07 at points 2e-9 apart (models/conv.py: max_pool_2x2).
    learner = self.learner(inner_steps=2, learn_inner_lr=False)
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(KEY, self.task))
    rng = np.random.default_rng(5)
    direction = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape)), theta)
    compiled = jax.jit(lambda t: learner.adapt(t, self.task.support, None)[1])

    def python_loop(t):
      params = t['model']['params']
      body = {k: v for k, v in params.items() if not k.startswith('norms')}
      losses = []
      for k in range(2):
        norms = {n: jax.tree.map(lambda v, k=k: v[k], v) for n, v in params.items()
                 if n.startswith('norms')}
        loss = lambda b, norms=norms: cross_entropy(
            MODEL.apply({'params': {**b, **norms}}, self.task.support.x), self.task.support.y)
        value, grads = jax.value_and_grad(loss)(body)
        losses.append(float(value))
        body = jax.tree.map(lambda p, g: p - 0.3 * g, body, grads)
      return losses

    for s in np.linspace(0.0, 1e-8, 6):
      t = jax.tree.map(lambda a, d, s=s: a + s * d, theta, direction)
      np.testing.assert_allclose(compiled(t), python_loop(t), rtol=1e-10)

  @pytest.mark.slow
  def test_with_every_piece_off_it_is_second_order_maml(self):
    plain = self.learner(per_step_bn=False, learn_inner_lr=False)
    maml = algorithms.maml(MODEL, cross_entropy, inner_optimizer=optax.sgd(0.3), inner_steps=3)
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), maml.init(KEY, self.task))
    self.assertEqual(jax.tree.structure(plain.init(KEY, self.task)), jax.tree.structure(theta))
    (l1, a1), g1 = jax.value_and_grad(plain.outer_loss, has_aux=True)(
        theta, self.task, None, jnp.int32(0))
    (l2, a2), g2 = jax.value_and_grad(maml.outer_loss, has_aux=True)(theta, self.task, None)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    chex.assert_trees_all_close(g1, g2, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(a1, a2, rtol=1e-12)

  @parameterized.parameters(1, 3, 5)
  def test_multi_step_weights_follow_the_papers_code(self, num_steps):
    for epoch in range(0, 12):
      ours = multi_step_weights(jnp.int32(epoch), num_steps, 10)
      expected = (paper_weights(epoch, num_steps, 10) if epoch < 10 and num_steps > 1
                  else np.eye(num_steps)[-1])
      np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7, err_msg=str(epoch))
      self.assertAlmostEqual(float(jnp.sum(ours)), 1.0, places=5)

  @pytest.mark.slow
  @pytest.mark.long
  def test_derivative_order_annealing_switches_at_its_step(self):
    annealed = self.learner(first_order_steps=5)
    first = self.learner(first_order_steps=10**6)
    second = self.learner()
    theta = jax.tree.map(lambda v: v.astype(jnp.float64), annealed.init(KEY, self.task))
    grad = lambda l, s: jax.jit(jax.grad(lambda t: l.outer_loss(t, self.task, None, s)[0]))(
        theta)
    before, after = jnp.int32(4), jnp.int32(5)
    chex.assert_trees_all_close(grad(annealed, before), grad(first, before), rtol=1e-10)
    chex.assert_trees_all_close(grad(annealed, after), grad(second, after), rtol=1e-10)
    difference = optax.tree.norm(jax.tree.map(jnp.subtract, grad(first, after),
                                              grad(second, after)))
    self.assertGreater(float(difference), 1e-3)

  @pytest.mark.slow
  def test_adapted_variables_hold_the_last_steps_batch_norm(self):
    learner = self.learner()
    theta = learner.init(KEY, self.task)
    theta['model']['params']['norms_0']['bias'] = jnp.arange(9.0).reshape(3, 3)
    for steps, row in ((0, 0), (1, 0), (3, 2), (7, 2)):  # past S: the last step's
      phi = learner.adapt(theta, self.task.support, None, steps).params
      np.testing.assert_array_equal(phi['params']['norms_0']['bias'], np.arange(9.0)[3 * row:][:3])
      self.assertEqual(learner.adapt(theta, self.task.support, None, steps).support_losses.shape,
                       (max(steps, 1),))

  @pytest.mark.slow
  def test_the_meta_step_trains_through_the_phases_from_the_config(self):
    jax.config.update('jax_enable_x64', False)
    config = Config(algorithm='mamlpp', dataset='omniglot', inner_steps=2, msl_steps=2,
                    first_order_steps=3).resolve()
    self.assertEqual((config.inner_lr, config.per_step_bn, config.learn_inner_lr),
                     (0.1, True, True))
    learner = config.spec.build(config.sections['algorithm'], MODEL, cross_entropy)
    tasks = jax.tree.map(lambda *v: jnp.stack(v).astype(
        jnp.float32 if v[0].dtype.kind == 'f' else v[0].dtype), tiny_task(1), tiny_task(2))
    state = create_train_state(learner, optax.adam(1e-2), KEY, tiny_task(0))
    meta_step = make_meta_train_step(learner, optax.adam(1e-2), donate=False)
    losses = []
    for i in range(6):  # multi-step + first order, first order, second order
      state, metrics = meta_step(state, tasks, jax.random.PRNGKey(i))
      losses.append(float(metrics['query_loss']))
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertEqual(int(state.step), 6)
    self.assertLess(losses[-1], losses[0])
    with self.assertRaisesRegex(ValueError, '--msl_steps=-1: must be >= 0'):
      ALGORITHMS['mamlpp'].section(msl_steps=-1)
    with self.assertRaisesRegex(ValueError, '--per_step_bn=True: --algorithm=maml does not use'):
      ALGORITHMS['maml'].section(per_step_bn=True)


class MamlPlusPlusRunTest(absltest.TestCase):

  @pytest.mark.slow
  def test_every_piece_on_trains_on_class_folders_resumes_and_loads(self):
    tmp = self.create_tempdir().full_path
    data = helpers.class_folders(os.path.join(tmp, 'data'), [f'class{c}' for c in range(10)])
    workdir = os.path.join(tmp, 'run')
    config = lambda steps: Config(  # each phase met: multi-step, first order, second order
        dataset=f'folders:{data}', algorithm='mamlpp', inner_steps=2, msl_steps=2,
        first_order_steps=3, ways=2, shots=1, query=2, meta_batch_size=2, channels=4,
        num_steps=steps, checkpoint_every=2, eval_tasks=10)
    with absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': os.path.join(tmp, 'c')}):
      loop.train_and_evaluate(config(2), workdir, show_progress=False)
      result = loop.train_and_evaluate(config(4), workdir, show_progress=False)  # resumed
      self.assertEqual((result.times['steps'], int(result.state.step)), (2, 4))
      self.assertTrue(np.isfinite(result.records[0]['mean']))
      learner = rundir.load_learner(workdir)
      self.assertEqual(learner.step, 4)
      names = result.run.source.class_names('test')[:2]
      files = [sorted(glob.glob(os.path.join(data, n, '*.png'))) for n in names]
      predicted = learner.predict([f[0] for f in files], names, [f[1] for f in files])
    self.assertTrue(set(predicted) <= set(names))


if __name__ == '__main__':
  absltest.main()
