"""Ctrl-C and SIGTERM stop a training run cleanly: the last step is checkpointed and resumes."""

import os
import signal
import subprocess
import sys
import time

import pytest

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
  assert 'Traceback' not in err
  step = int(lines[0].split('stopped at step ')[1].split(';')[0])
  assert helpers.checkpoints(workdir) == [step]
  resumed = helpers.script('train.py', f'--workdir={workdir}', '--hidden=8',
                           f'--num_steps={step + 5}', '--checkpoint_every=500000',
                           '--log_every=50', '--eval_tasks=10', '--baselines=', '--plot=false')
  assert resumed.returncode == 0, resumed.stderr
  assert f'resuming from step {step} of {step + 5}' in resumed.stderr
  assert helpers.checkpoints(workdir) == [step, step + 5]
