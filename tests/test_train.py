"""The shared meta-train step and the training loop."""

import json
import os

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import builders
from metajax import train
from metajax.checkpoint import Checkpointer
from metajax.config import Config
from metajax.learner import mean_over_tasks, task_meta_gradient
from metajax.types import Split, Task
from tests import helpers

KEY = jax.random.PRNGKey(0)
TINY = dict(num_steps=40, log_every=10, checkpoint_every=20, eval_tasks=50,
            hidden=(16, 16), meta_batch_size=4)


def _maml_step(inner_steps, num_tasks):
  """(tasks, initial state, un-donated jitted step) of a small MAML problem."""
  learner = helpers.learner('maml', inner_lr=0.03, inner_steps=inner_steps)
  tasks = helpers.sinusoid_tasks(num_tasks=num_tasks)
  opt = optax.adam(1e-2)
  state = train.create_train_state(learner, opt, KEY, helpers.first(tasks))
  return tasks, state, train.make_meta_train_step(learner, opt, donate=False)


class MetaStepTest(parameterized.TestCase):

  @parameterized.parameters('maml', 'fomaml', 'reptile', 'anil', 'metasgd', 'pretrained')
  def test_vmap_over_tasks_equals_python_loop(self, name):
    learner = helpers.learner(name, inner_lr=0.03, inner_steps=2)
    tasks = helpers.sinusoid_tasks(num_tasks=5)
    theta = helpers.init(learner, tasks)
    keys = jax.random.split(KEY, 5)
    grads, metrics = train.batch_meta_gradient(learner, theta, tasks, keys)
    loop = [task_meta_gradient(learner, theta, jax.tree.map(lambda v: v[i], tasks), keys[i])
            for i in range(5)]
    expected = mean_over_tasks(jax.tree.map(lambda *g: jnp.stack(g), *[g for g, _ in loop]))
    chex.assert_trees_all_close(grads, expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(metrics['query_loss'],
                               np.mean([m['query_loss'] for _, m in loop]), rtol=1e-5)

  @parameterized.parameters(('maml', 1), ('maml', 3), ('reptile', 2), ('metasgd', 6))
  def test_chunked_meta_gradient_equals_one_vmap(self, name, chunk):
    learner = helpers.learner(name, inner_lr=0.03, inner_steps=2)
    tasks = helpers.sinusoid_tasks(num_tasks=6)
    theta = helpers.init(learner, tasks)
    keys = jax.random.split(KEY, 6)
    whole = train.batch_meta_gradient(learner, theta, tasks, keys)
    chunked = jax.jit(lambda th: train.batch_meta_gradient(learner, th, tasks, keys,
                                                           task_chunk=chunk))(theta)
    chex.assert_trees_all_close(chunked, whole, rtol=2e-5, atol=1e-6)

  def test_chunk_that_does_not_divide_the_meta_batch_is_refused(self):
    learner = helpers.learner('maml')
    tasks = helpers.sinusoid_tasks(num_tasks=6)
    with self.assertRaisesRegex(ValueError, r'--task_chunk=4: the meta-batch of 6'):
      train.batch_meta_gradient(learner, helpers.init(learner, tasks), tasks,
                                jax.random.split(KEY, 6), task_chunk=4)
    with self.assertRaisesRegex(ValueError, r'--task_chunk=4.*meta_batch_size=6'):
      Config(meta_batch_size=6, task_chunk=4).validate()

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


class TrainLoopTest(parameterized.TestCase):

  def test_writes_the_run_directory_and_traces_once(self, ):
    workdir = self.create_tempdir().full_path
    config = Config(**TINY)
    calls = []
    original = train.make_meta_train_step

    def counting(learner, optimizer, donate=True, **kwargs):
      fn = learner.outer_loss
      learner = learner._replace(outer_loss=lambda *a: (calls.append(1), fn(*a))[1])
      return original(learner, optimizer, donate, **kwargs)

    train.make_meta_train_step = counting
    try:
      result = train.train_and_evaluate(config, workdir, show_progress=False)
    finally:
      train.make_meta_train_step = original
    self.assertLen(calls, 1)  # 40 steps, one trace
    for name in ('config.json', 'metrics.jsonl', 'eval.json', 'tensorboard', 'checkpoints'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    self.assertTrue(os.listdir(os.path.join(workdir, 'tensorboard')))
    with open(os.path.join(workdir, 'eval.json')) as f:
      records = json.load(f)
    self.assertEqual([r['inner_steps'] for r in records], [0, 1, 10])
    for r in records:
      self.assertEqual(r['metric'], 'mse')
      self.assertEqual(r['num_tasks'], 50)
      self.assertGreater(r['ci95'], 0)
    self.assertEqual(sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                            if s.isdigit()), [20, 40])
    self.assertEqual(int(result.state.step), 40)

  def test_validation_keeps_the_best_checkpoint_and_tests_it(self):
    workdir = self.create_tempdir().full_path
    config = Config(**{**TINY, 'num_steps': 60, 'eval_every': 20})
    result = train.train_and_evaluate(config, workdir, show_progress=False)
    with open(os.path.join(workdir, 'best', 'best.json')) as f:
      best = json.load(f)
    val = [r for r in _rows(workdir) if r['split'] == 'val']
    self.assertEqual([r['step'] for r in val], [20, 40, 60])
    scores = {r['step']: r['mse_10_steps'] for r in val}
    self.assertEqual(best['step'], min(scores, key=scores.get))
    self.assertAlmostEqual(best['value'], scores[best['step']], places=5)
    self.assertEqual(int(result.state.step), best['step'])
    for r in result.records:
      self.assertEqual((r['checkpoint_step'], r['selected_on']), (best['step'], 'val'))
    _, _, loaded = train.load_run(workdir)
    chex.assert_trees_all_equal(loaded.theta, result.state.theta)
    _, _, latest = train.load_run(workdir, prefer_best=False)
    self.assertEqual(int(latest.step), 60)

  def test_resume_continues_where_it_stopped(self):
    workdir = self.create_tempdir().full_path
    full = train.train_and_evaluate(Config(**TINY), self.create_tempdir().full_path,
                                    show_progress=False)
    train.train_and_evaluate(Config(**{**TINY, 'num_steps': 20}), workdir,
                             show_progress=False)
    resumed = train.train_and_evaluate(Config(**TINY), workdir, show_progress=False)
    chex.assert_trees_all_equal(resumed.state.theta, full.state.theta)
    self.assertEqual(resumed.records, full.records)

  def test_workdir_with_other_config_is_refused_and_untouched(self):
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(Config(**{**TINY, 'num_steps': 10}), workdir, show_progress=False)
    before = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
    with self.assertRaisesRegex(train.ConfigMismatchError,
                                r'--shots=10 there, 5 here.*--inner_lr=0.01 there, 0.1 here'):
      train.train_and_evaluate(Config(**{**TINY, 'shots': 5, 'inner_lr': 0.1}), workdir,
                               show_progress=False)
    after = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
    self.assertEqual(before, after)

  def test_nan_meta_gradient_stops_with_the_step_and_keeps_the_last_checkpoint(self):
    workdir = self.create_tempdir().full_path
    config = Config(**{**TINY, 'num_steps': 60, 'checkpoint_every': 20, 'log_every': 5})
    real_source = builders.make_source

    def poisoned_source(cfg, *args, **kwargs):
      source = real_source(cfg, *args, **kwargs)
      batch = source.train_batch

      def train_batch(step, share=None):
        tasks = batch(step, share)
        if step + 1 >= 27:  # meta-step 27 onwards sees a NaN target
          tasks = tasks._replace(query=tasks.query._replace(y=tasks.query.y * jnp.nan))
        return tasks
      source.train_batch = train_batch
      return source

    builders.make_source = poisoned_source
    try:
      with self.assertRaisesRegex(FloatingPointError,
                                  r'meta-step 27 .*last good checkpoint, step 20'):
        train.train_and_evaluate(config, workdir, show_progress=False)
    finally:
      builders.make_source = real_source
    checkpointer = Checkpointer(workdir)
    self.assertEqual(checkpointer.latest_step(), 20)
    config_, learner, state = train.load_run(workdir)
    self.assertEqual(int(state.step), 20)
    self.assertEqual(int(state.nonfinite_step), -1)
    chex.assert_tree_all_finite(state.theta)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'eval.json')))


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]
