"""The learner contract (metajax/learner.py), checked for every registered algorithm.

As optax tests every transformation, every algorithm in the registry runs
through the same checks on a tiny task of a kind it handles: its learner
says what its spec says, `init`/`adapt`/`apply`/`predict` return what the
contract promises, exactly one way to train is set and returns a gradient
shaped like theta with the contract's metrics, and one jitted meta-step
traces once and moves theta. A new algorithm adds its line to `SETTINGS`.
"""

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.algorithms import ALGORITHMS
from metajax.config import Config
from metajax.learner import AUX_KEYS, Adapted
from metajax.losses import cross_entropy, mse
from metajax.models import MLP
from metajax.run import make_learner
from metajax.step import make_meta_train_step, create_train_state, task_meta_gradient
from metajax.types import Split, Task

KEY = jax.random.PRNGKey(0)
WAYS, SHOTS, QUERY, DIM = 3, 2, 2, 4

# Per algorithm: small settings for its contract check (flag names, as a config has them).
SETTINGS = {
    'maml': dict(inner_lr=0.05, inner_steps=2),
    'fomaml': dict(inner_lr=0.05, inner_steps=2),
    'anil': dict(inner_lr=0.05, inner_steps=2, backprop_steps=1),
    'metasgd': dict(inner_lr=0.05, inner_steps=2),
    'reptile': dict(inner_lr=0.05, inner_steps=2),
    'imaml': dict(inner_lr=0.05, inner_steps=2, cg_steps=2),
    'pretrained': dict(inner_lr=0.05, inner_steps=2),
    'protonet': dict(),
    'predictor': dict(inner_lr=0.05, inner_steps=1),
    'finetune': dict(inner_lr=0.05, inner_steps=2, pretrain_classes=5),
}


def problem(name):
  """(learner, example task, batch of 2 tasks or a supervised batch, inner steps) of `name`."""
  spec = ALGORITHMS[name]
  regression = 'regression' in spec.tasks
  dataset = 'sinusoid' if regression else 'omniglot'
  config = Config(algorithm=name, dataset=dataset, **SETTINGS[name]).resolve()
  model = MLP(hidden=(8, 8), out=1 if regression else WAYS)
  learner = make_learner(config, model, mse if regression else cross_entropy)
  rng = np.random.default_rng(0)

  def split(n):
    x = rng.normal(size=(2, n, 1 if regression else DIM)).astype(np.float32)
    if regression:
      return Split(jnp.asarray(x), jnp.asarray(np.sin(x)))
    return Split(jnp.asarray(x), jnp.tile(jnp.arange(n) % WAYS, (2, 1)))

  tasks = Task(split(WAYS * SHOTS), split(WAYS * QUERY))
  batch = tasks
  if learner.batch_loss is not None:
    batch = Split(tasks.support.x[0], tasks.support.y[0] % config.pretrain_classes)
  steps = config.inner_steps if spec.adapts else None
  return learner, jax.tree.map(lambda v: v[0], tasks), batch, steps


class ConformanceTest(parameterized.TestCase):

  def test_every_registered_algorithm_has_a_line(self):
    self.assertEqual(set(SETTINGS), set(ALGORITHMS))

  @parameterized.parameters(*SETTINGS)
  def test_learner_meets_the_contract(self, name):
    spec = ALGORITHMS[name]
    learner, task, _, steps = problem(name)
    self.assertEqual((learner.name, learner.any_ways, learner.adapts),
                     (name, spec.any_ways, spec.adapts))
    trainers = [f for f in (learner.outer_loss, learner.meta_gradient, learner.batch_loss)
                if f is not None]
    self.assertLen(trainers, 1)

    theta = learner.init(KEY, task)
    self.assertIn('model', theta)
    adapted = learner.adapt(theta, task.support, KEY)
    self.assertIsInstance(adapted, Adapted)
    self.assertEqual(adapted.support_losses.shape, (max(steps or 1, 1),))
    chex.assert_tree_all_finite(adapted)
    predictions = learner.apply(theta, adapted.params, task.query.x)
    self.assertEqual(predictions.shape[0], task.query.x.shape[0])
    if 'regression' not in spec.tasks:
      self.assertGreaterEqual(predictions.shape[1], WAYS)
    chex.assert_trees_all_close(learner.predict(theta, task.support, task.query.x, KEY),
                                predictions, rtol=1e-6)
    if spec.adapts:  # num_steps overrides the training steps, and is static
      zero = jax.jit(lambda t: learner.adapt(t, task.support, KEY, 0))(theta)
      self.assertEqual(zero.support_losses.shape, (1,))

  @parameterized.parameters(*SETTINGS)
  def test_meta_gradient_and_metrics(self, name):
    learner, task, batch, _ = problem(name)
    theta = learner.init(KEY, task)
    if learner.batch_loss is not None:
      grads, aux = jax.grad(learner.batch_loss, has_aux=True)(theta, batch, KEY)
    else:
      grads, aux = task_meta_gradient(learner, theta, task, KEY)
    self.assertEqual(set(aux), set(AUX_KEYS))
    for value in aux.values():
      self.assertEqual(jnp.shape(value), ())
    chex.assert_trees_all_equal_structs(grads, theta)
    chex.assert_tree_all_finite((grads, aux))
    self.assertGreater(float(optax.tree.norm(grads)), 0)

  @parameterized.parameters(*SETTINGS)
  def test_one_jitted_step_traces_once_and_moves_theta(self, name):
    learner, task, batch, _ = problem(name)
    opt = optax.adam(1e-2)
    state = create_train_state(learner, opt, KEY, task)
    step = make_meta_train_step(learner, opt, donate=False)
    first, metrics = step(state, batch, KEY)
    second, _ = step(first, batch, jax.random.fold_in(KEY, 1))
    self.assertEqual(step._cache_size(), 1)  # pylint: disable=protected-access
    self.assertEqual(set(metrics), set(AUX_KEYS) | {'grad_norm'})
    self.assertEqual((int(first.step), int(second.step), int(second.nonfinite_step)), (1, 2, -1))
    self.assertGreater(float(optax.tree.norm(jax.tree.map(
        jnp.subtract, second.theta, state.theta))), 0)
