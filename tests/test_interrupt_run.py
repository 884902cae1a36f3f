"""Ctrl-C and SIGTERM stop a training run cleanly: the last step is checkpointed and resumes."""

import os
import signal
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
import pytest

from metajax import hooks, loop
from metajax import run as run_lib
from metajax.config import Config
from tests import helpers


def _start(workdir, *args):
  env = dict(os.environ, PYTHONPATH=helpers.REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.Popen(
      [sys.executable, os.path.join(helpers.REPO, 'experiments', 'train.py'),
       f'--workdir={workdir}', '--hidden=8', '--num_steps=1000000', '--checkpoint_every=500000',
       '--log_every=50', '--eval_tasks=10', '--baselines=', '--plot=false', *args],
      stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_checkpoints_the_last_step_and_the_run_resumes_there(tmp_path, sig):
  workdir = str(tmp_path / 'run')
  process = _start(workdir)
  deadline = time.monotonic() + 120
  while not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):  # it trains
    assert process.poll() is None, process.stderr.read()
    assert time.monotonic() < deadline
    time.sleep(0.2)
  process.send_signal(sig)
  _, err = process.communicate(timeout=120)
  assert process.returncode == 130, err
  lines = [l for l in err.splitlines() if 'stopped at step' in l]
  assert len(lines) == 1, err
  assert lines[0].endswith('Run the same command again to resume.'), lines[0]
  assert 'Traceback' not in err
  step = int(lines[0].split('stopped at step ')[1].split(';')[0])
  assert helpers.checkpoints(workdir) == [step]
  resumed = helpers.script('train.py', f'--workdir={workdir}', '--hidden=8',
                           f'--num_steps={step + 5}', '--checkpoint_every=500000',
                           '--log_every=50', '--eval_tasks=10', '--baselines=', '--plot=false')
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming from step {step} of {step + 5}' in resumed.stderr
  assert helpers.checkpoints(workdir) == [step, step + 5]


class InProcessInterruptTest(absltest.TestCase):
  """Signals sent from inside a step or the test evaluation, in this process."""

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.config = Config(num_steps=40, log_every=5, checkpoint_every=10, eval_tasks=20,
                         hidden=(8, 8), meta_batch_size=4)

  def test_a_second_signal_stops_mid_step_and_names_the_last_complete_checkpoint(self):
    log = hooks.LogMetrics.__call__

    def twice_at_step_15(self, done, state, metrics):
      if done == 15:
        os.kill(os.getpid(), signal.SIGINT)  # the first: stop after this step
        os.kill(os.getpid(), signal.SIGINT)  # the second: at once
      return log(self, done, state, metrics)

    with mock.patch.object(hooks.LogMetrics, '__call__', twice_at_step_15):
      with self.assertRaisesRegex(loop.RunInterrupted, r'^SIGINT twice: stopped at once; the '
                                  r'last complete checkpoint is step 10 in .*run/checkpoints$'):
        loop.train_and_evaluate(self.config, self.workdir, show_progress=False)
    self.assertEqual(helpers.checkpoints(self.workdir), [10])
    result = loop.train_and_evaluate(self.config, self.workdir, show_progress=False)
    self.assertEqual(int(result.state.step), 40)

  def test_a_signal_while_testing_stops_the_evaluation_and_keeps_the_training(self):
    evaluate = run_lib.Run.evaluate

    def interrupted(self, theta, split='test', *args, **kwargs):
      if split == 'test':
        os.kill(os.getpid(), signal.SIGTERM)
      return evaluate(self, theta, split, *args, **kwargs)

    before = signal.getsignal(signal.SIGTERM)
    with mock.patch.object(run_lib.Run, 'evaluate', interrupted):
      with self.assertRaisesRegex(loop.RunInterrupted, r'^SIGTERM: stopped while testing; '
                                  r'training finished at step 40, checkpointed in '):
        loop.train_and_evaluate(self.config, self.workdir, show_progress=False)
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'eval.json')))
    self.assertEqual(signal.getsignal(signal.SIGTERM), before)  # handlers restored
    result = loop.train_and_evaluate(self.config, self.workdir, show_progress=False)
    self.assertEqual(result.times['steps'], 0)  # already trained: it only tests
    self.assertLen(result.records, 3)
