"""The training loop and the run directory: files, validation, resume, refusals, the NaN stop."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax.numpy as jnp
import pytest

from metajax import loop, optimizers
from metajax import rundir
from metajax import step as step_lib
from metajax.checkpoint import Checkpointer
from metajax.config import Config
from metajax.data.sinusoid import SinusoidSource

TINY = dict(num_steps=40, log_every=10, checkpoint_every=20, eval_tasks=50,
            hidden=(16, 16), meta_batch_size=4)


class TrainLoopTest(parameterized.TestCase):

  def test_writes_the_run_directory_and_traces_once(self, ):
    workdir = self.create_tempdir().full_path
    config = Config(**TINY)
    calls = []
    original = step_lib.make_meta_train_step

    def counting(learner, optimizer, donate=True, **kwargs):
      fn = learner.outer_loss
      learner = learner._replace(outer_loss=lambda *a: (calls.append(1), fn(*a))[1])
      return original(learner, optimizer, donate, **kwargs)

    with absltest.mock.patch.object(step_lib, 'make_meta_train_step', counting):
      result = loop.train_and_evaluate(config, workdir, show_progress=False)
    self.assertLen(calls, 1)  # 40 steps, one trace
    for name in ('config.json', 'flags.txt', 'metrics.jsonl', 'eval.json', 'tensorboard',
                 'checkpoints'):
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

  def test_loading_a_folder_that_is_not_a_run_names_the_argument_and_creates_nothing(self):
    folder = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, f'^workdir={folder} holds no run'):
      rundir.load_learner(folder)
    rundir.write_config(Config(hidden=(8,)).resolve(), folder)  # settings, no checkpoint
    with self.assertRaisesRegex(FileNotFoundError, f'^workdir={folder} holds no checkpoint'):
      rundir.load_run(folder)
    self.assertEqual(sorted(os.listdir(folder)), ['config.json', 'flags.txt'])

  def test_tensorboard_reads_back_the_logged_metrics(self):
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator',
        reason='tensorboard (the tensorboard or test extra) is not installed')
    workdir = self.create_tempdir().full_path
    loop.train_and_evaluate(Config(**TINY), workdir, show_progress=False)
    events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
    events.Reload()
    logged = [r for r in _rows(workdir) if r['split'] == 'train']
    read = events.Scalars('train/query_loss')
    self.assertEqual([e.step for e in read], [r['step'] for r in logged])
    for event, row in zip(read, logged):
      self.assertAlmostEqual(event.value, row['query_loss'], places=5)

  def test_tensorboard_shows_validation_test_learning_rate_and_speed(self):
    event_accumulator = pytest.importorskip(
        'tensorboard.backend.event_processing.event_accumulator',
        reason='tensorboard (the tensorboard or test extra) is not installed')
    workdir = self.create_tempdir().full_path
    config = Config(**{**TINY, 'num_steps': 40, 'log_every': 10, 'eval_every': 20,
                       'lr_schedule': 'cosine', 'meta_lr': 0.01, 'min_meta_lr': 0.001})
    result = loop.train_and_evaluate(config, workdir, show_progress=False)
    events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
    events.Reload()
    tags = events.Tags()['scalars']
    val = [r for r in _rows(workdir) if r['split'] == 'val']
    for record in result.records:  # one test scalar per inner-step count, as eval.json
      (event,) = events.Scalars(f'test/{record["metric"]}_{record["inner_steps"]}_steps')
      self.assertAlmostEqual(event.value, record['mean'], places=5)
      read = events.Scalars(f'val/{record["metric"]}_{record["inner_steps"]}_steps')
      self.assertEqual([e.step for e in read], [20, 40])
      self.assertEqual([round(e.value, 5) for e in read],
                       [round(r[f'{record["metric"]}_{record["inner_steps"]}_steps'], 5)
                        for r in val])
    rates = events.Scalars('train/meta_lr')  # the cosine schedule at the step logged
    self.assertEqual([e.step for e in rates], [10, 20, 30, 40])
    schedule = optimizers.learning_rate(config.sections['run'])
    for event in rates:
      self.assertAlmostEqual(event.value, float(schedule(event.step - 1)), places=6)
    self.assertLess(rates[-1].value, rates[0].value)
    speed = events.Scalars('train/steps_per_s')  # every window after the first
    self.assertEqual([e.step for e in speed], [20, 30, 40])
    self.assertTrue(all(e.value > 0 for e in speed), tags)

  def test_validation_keeps_the_best_checkpoint_and_tests_it(self):
    workdir = self.create_tempdir().full_path
    config = Config(**{**TINY, 'num_steps': 60, 'eval_every': 20})
    result = loop.train_and_evaluate(config, workdir, show_progress=False)
    with open(os.path.join(workdir, 'best', 'best.json')) as f:
      best = json.load(f)
    val = [r for r in _rows(workdir) if r['split'] == 'val']
    self.assertEqual([r['step'] for r in val], [20, 40, 60])
    clock = [r['time_s'] for r in _rows(workdir)]  # seconds of training, evaluation left out
    self.assertEqual(clock, sorted(clock))
    self.assertGreater(clock[0], 0)
    scores = {r['step']: r['mse_10_steps'] for r in val}
    self.assertEqual(best['step'], min(scores, key=scores.get))
    self.assertAlmostEqual(best['value'], scores[best['step']], places=5)
    self.assertEqual(int(result.state.step), best['step'])
    for r in result.records:
      self.assertEqual((r['checkpoint_step'], r['selected_on']), (best['step'], 'val'))
    _, loaded = rundir.load_run(workdir)
    chex.assert_trees_all_equal(loaded.theta, result.state.theta)
    _, latest = rundir.load_run(workdir, prefer_best=False)
    self.assertEqual(int(latest.step), 60)
    # A step by number: the best one's too, and a clear error for one not kept.
    _, by_step = rundir.load_run(workdir, step=best['step'])
    chex.assert_trees_all_equal(by_step.theta, result.state.theta)
    self.assertEqual(int(rundir.load_learner(workdir, step=40).step), 40)
    with self.assertRaisesRegex(FileNotFoundError, r'step=30: no checkpoint of that step in '
                                r'.*checkpoints \(kept: 20, 40, 60\)'):
      rundir.load_learner(workdir, step=30)

  @parameterized.parameters(
      dict(),
      # MAML++: its multi-step loss and first-order phases end across the resume.
      dict(algorithm='mamlpp', inner_steps=2, inner_lr=0.01, msl_steps=15, first_order_steps=25,
           eval_inner_steps=(2,)),
  )
  @pytest.mark.slow
  def test_resume_continues_where_it_stopped(self, **settings):
    workdir = self.create_tempdir().full_path
    tiny = {**TINY, **settings}
    full = loop.train_and_evaluate(Config(**tiny), self.create_tempdir().full_path,
                                    show_progress=False)
    loop.train_and_evaluate(Config(**{**tiny, 'num_steps': 20}), workdir,
                             show_progress=False)
    resumed = loop.train_and_evaluate(Config(**tiny), workdir, show_progress=False)
    chex.assert_trees_all_equal(resumed.state.theta, full.state.theta)
    self.assertEqual(resumed.records, full.records)

  def test_workdir_with_other_config_is_refused_and_untouched(self):
    workdir = self.create_tempdir().full_path
    loop.train_and_evaluate(Config(**{**TINY, 'num_steps': 10}), workdir, show_progress=False)
    before = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
    with self.assertRaisesRegex(rundir.ConfigMismatchError,
                                r'--shots=10 there, 5 here.*--inner_lr=0.01 there, 0.1 here'):
      loop.train_and_evaluate(Config(**{**TINY, 'shots': 5, 'inner_lr': 0.1}), workdir,
                               show_progress=False)
    after = {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}
    self.assertEqual(before, after)

  def test_nan_meta_gradient_stops_with_the_step_and_keeps_the_last_checkpoint(self):
    workdir = self.create_tempdir().full_path
    config = Config(**{**TINY, 'num_steps': 60, 'checkpoint_every': 20, 'log_every': 5})
    real_batch = SinusoidSource.train_batch

    def poisoned_batch(source, step, share=None):
      tasks = real_batch(source, step, share)
      if step + 1 >= 27:  # meta-step 27 onwards sees a NaN target
        tasks = tasks._replace(query=tasks.query._replace(y=tasks.query.y * jnp.nan))
      return tasks

    with absltest.mock.patch.object(SinusoidSource, 'train_batch', poisoned_batch):
      with self.assertRaisesRegex(FloatingPointError,
                                  r'meta-step 27 .*last good checkpoint, step 20.*--inner_lr'):
        loop.train_and_evaluate(config, workdir, show_progress=False)
    checkpointer = Checkpointer(workdir)
    self.assertEqual(checkpointer.latest_step(), 20)
    _, state = rundir.load_run(workdir)
    self.assertEqual(int(state.step), 20)
    self.assertEqual(int(state.nonfinite_step), -1)
    chex.assert_tree_all_finite(state.theta)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'eval.json')))


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]
