"""The jitted meta-step: vmap equals a loop, chunking, jit equals no jit, the non-finite guard."""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import step as step_lib
from metajax.config import RunSettings
from tests import helpers

KEY = jax.random.PRNGKey(0)


def _maml_step(inner_steps, num_tasks):
  """(tasks, initial state, un-donated jitted step) of a small MAML problem."""
  learner = helpers.learner('maml', inner_lr=0.03, inner_steps=inner_steps)
  tasks = helpers.sinusoid_tasks(num_tasks=num_tasks)
  opt = optax.adam(1e-2)
  state = step_lib.create_train_state(learner, opt, KEY, helpers.first(tasks))
  return tasks, state, step_lib.make_meta_train_step(learner, opt, donate=False)


class MetaStepTest(parameterized.TestCase):

  @parameterized.parameters('maml', 'fomaml', 'reptile', 'anil', 'metasgd', 'pretrained',
                            'predictor')
  def test_vmap_over_tasks_equals_python_loop(self, name):
    learner = helpers.learner(name, inner_lr=0.03, inner_steps=2)
    tasks = helpers.sinusoid_tasks(num_tasks=5)
    theta = helpers.init(learner, tasks)
    keys = jax.random.split(KEY, 5)
    grads, metrics = step_lib.batch_meta_gradient(learner, theta, tasks, keys)
    loop = [step_lib.task_meta_gradient(learner, theta, jax.tree.map(lambda v: v[i], tasks),
                                        keys[i]) for i in range(5)]
    expected = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), 0), *[g for g, _ in loop])
    chex.assert_trees_all_close(grads, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(metrics['query_loss'],
                               np.mean([m['query_loss'] for _, m in loop]), rtol=1e-5)

  @parameterized.parameters(('maml', 1), ('maml', 3), ('reptile', 2), ('metasgd', 6))
  def test_chunked_meta_gradient_equals_one_vmap(self, name, chunk):
    learner = helpers.learner(name, inner_lr=0.03, inner_steps=2)
    tasks = helpers.sinusoid_tasks(num_tasks=6)
    theta = helpers.init(learner, tasks)
    keys = jax.random.split(KEY, 6)
    whole = step_lib.batch_meta_gradient(learner, theta, tasks, keys)
    chunked = jax.jit(lambda th: step_lib.batch_meta_gradient(learner, th, tasks, keys,
                                                              task_chunk=chunk))(theta)
    chex.assert_trees_all_close(chunked, whole, rtol=2e-5, atol=1e-6)

  def test_chunk_that_does_not_divide_the_meta_batch_is_refused(self):
    learner = helpers.learner('maml')
    tasks = helpers.sinusoid_tasks(num_tasks=6)
    with self.assertRaisesRegex(ValueError, r'^task_chunk=4: the meta-batch of 6'):
      step_lib.batch_meta_gradient(learner, helpers.init(learner, tasks), tasks,
                                   jax.random.split(KEY, 6), task_chunk=4)
    with self.assertRaisesRegex(ValueError, r'--task_chunk=4.*meta_batch_size=6'):
      RunSettings(meta_batch_size=6, task_chunk=4).validate()

  @pytest.mark.slow
  def test_jit_equals_no_jit(self):
    tasks, state, step = _maml_step(inner_steps=2, num_tasks=5)
    jitted, m1 = step(state, tasks, KEY)
    with jax.disable_jit():
      plain, m2 = step(state, tasks, KEY)
    chex.assert_trees_all_close((jitted, m1), (plain, m2), rtol=1e-5, atol=1e-7)
    self.assertFalse(np.allclose(jitted.theta['model']['params']['head']['kernel'],
                                 state.theta['model']['params']['head']['kernel']))

  def test_non_finite_gradient_freezes_state_and_records_the_step(self):
    tasks, state, step = _maml_step(inner_steps=1, num_tasks=2)
    state, _ = step(state, tasks, KEY)
    bad = tasks._replace(query=tasks.query._replace(y=tasks.query.y.at[0, 0].set(jnp.nan)))
    frozen, metrics = step(state, bad, KEY)
    self.assertFalse(np.isfinite(metrics['grad_norm']))
    self.assertEqual(int(frozen.nonfinite_step), 2)
    chex.assert_trees_all_equal(frozen.theta, state.theta)
    later, _ = step(frozen, tasks, KEY)  # stays frozen until the host stops the run
    chex.assert_trees_all_equal(later.theta, state.theta)
    self.assertEqual(int(later.nonfinite_step), 2)
