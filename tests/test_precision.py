"""bfloat16 compute with float32 meta-parameters."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import pytest

from metajax import loop
from metajax import step
from metajax.config import Config
from metajax.losses import mse
from metajax.models import MLP
from metajax.run import make_learner
from tests import helpers


class BFloat16Test(absltest.TestCase):

  @pytest.mark.slow
  def test_meta_gradient_is_float32_and_close_to_float32s(self):
    config = Config(hidden=(16, 16)).resolve()
    tasks = helpers.sinusoid_tasks(num_tasks=4)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    f32 = make_learner(config, MLP(hidden=(16, 16)), mse)
    bf16 = make_learner(config.replace(compute_dtype='bfloat16'), MLP(hidden=(16, 16)), mse)
    theta = helpers.init(f32, tasks)
    g16, _ = step.batch_meta_gradient(bf16, theta, tasks, keys)
    g32, _ = step.batch_meta_gradient(f32, theta, tasks, keys)
    self.assertFalse(all(jnp.allclose(a, b, rtol=1e-6) for a, b in
                         zip(jax.tree.leaves(g16), jax.tree.leaves(g32))))  # it did compute in bf16
    chex.assert_tree_all_finite(g16)
    self.assertTrue(all(v.dtype == jnp.float32 for v in jax.tree.leaves(g16)))
    cos = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)))
    norm = lambda g: jnp.sqrt(sum(jnp.vdot(a, a) for a in jax.tree.leaves(g)))
    self.assertGreater(float(cos / norm(g16) / norm(g32)), 0.99)

  @pytest.mark.slow
  def test_bfloat16_run_is_within_10_percent_of_float32(self):
    results = {}
    for dtype in ('float32', 'bfloat16'):
      config = Config(compute_dtype=dtype, num_steps=3000, checkpoint_every=3000,
                      log_every=500, eval_tasks=600, eval_inner_steps=(1,))
      result = loop.train_and_evaluate(config, self.create_tempdir().full_path,
                                       show_progress=False)
      self.assertTrue(all(v.dtype == jnp.float32 for v in jax.tree.leaves(result.state.theta)))
      results[dtype] = result.records[0]['mean']
    self.assertLess(abs(results['bfloat16'] - results['float32']), 0.1 * results['float32'])
    self.assertLess(results['float32'], 1.5)  # both learned: chance is about 3
