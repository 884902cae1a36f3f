"""A run directory you can trust: the class split it trained on, its paths, its refusals."""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import pytest

from metajax import checkpoint
from metajax import loop
from metajax import rundir
from metajax.config import Config
from tests import helpers


write_classes = helpers.class_folders


class RunDirectoryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.cache = os.path.join(self.tmp, 'cache')
    self.enter_context(mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': self.cache}))
    self.data = write_classes(os.path.join(self.tmp, 'data'), [f'class{c}' for c in range(10)])

  def config(self, **changes):
    values = dict(dataset='folders', data_dir=self.data, algorithm='protonet', ways=2,
                  train_ways=2, shots=1, query=2, eval_query=2, meta_batch_size=2, channels=4,
                  num_steps=4, checkpoint_every=2, log_every=3, eval_tasks=4)
    return Config(**{**values, **changes})

  def train(self, workdir, **changes):
    return loop.train_and_evaluate(self.config(**changes), workdir, show_progress=False)

  @pytest.mark.slow
  def test_the_class_split_is_recorded_and_a_changed_one_is_refused(self):
    workdir = os.path.join(self.tmp, 'run')
    self.train(workdir)
    with open(os.path.join(workdir, rundir.CLASSES)) as f:
      recorded = json.load(f)
    self.assertEqual(sorted(c for s in ('train', 'val', 'test') for c in recorded[s]['classes']),
                     sorted(f'class{c}' for c in range(10)))
    with open(os.path.join(workdir, 'eval.json')) as f:
      before = json.load(f)
    self.assertEqual({r['data'] for r in before}, {recorded['test']['fingerprint']})

    write_classes(self.data, ['class10'], seed=1)  # one class more
    with self.assertRaisesRegex(rundir.DataChangedError,
                                r'1 class added \(class10\).*train in a new --workdir'):
      self.train(workdir, num_steps=6)
    env = dict(os.environ, METAJAX_CACHE_DIR=self.cache)
    out = helpers.script('evaluate.py', f'--workdir={workdir}', '--num_tasks=4', env=env)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('1 class added (class10)', out.stderr)
    self.assertIn('--new_data', out.stderr)
    out = helpers.script('evaluate.py', f'--workdir={workdir}', '--num_tasks=4', '--new_data',
                         env=env)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn('classes', out.stderr)  # the data summary
    with open(os.path.join(workdir, 'eval.json')) as f:
      after = json.load(f)
    self.assertEqual(after[:len(before)], before)  # training's own records are kept
    self.assertLen(after, 2 * len(before))
    self.assertNotEqual(after[-1]['data'], before[0]['data'])
    self.assertIs(after[-1]['data_changed'], True)
    self.assertIn('classes_seen_in_training', after[-1])
    self.assertIn('training classes of the run', out.stderr)

  @pytest.mark.slow
  def test_a_resumed_run_says_how_many_steps_each_row_averages(self):
    workdir = os.path.join(self.tmp, 'run')
    self.train(workdir)
    os.makedirs(os.path.join(workdir, 'checkpoints', '6.orbax-checkpoint-tmp-12'))
    self.train(workdir, num_steps=6)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    self.assertEqual([(r['step'], r['steps_averaged']) for r in rows], [(3, 3), (4, 1), (6, 2)])
    self.assertEqual(helpers.checkpoints(workdir), [2, 4, 6])

  def test_load_learner_takes_a_run_a_checkpoint_or_a_file_in_the_run(self):
    workdir = os.path.join(self.tmp, 'run')
    self.train(workdir)
    self.assertEqual(rundir.load_learner(workdir).step, 4)
    self.assertEqual(rundir.load_learner(os.path.join(workdir, 'checkpoints', '2')).step, 2)
    self.assertEqual(rundir.load_learner(os.path.join(workdir, 'config.json')).step, 4)
    with self.assertRaisesRegex(ValueError, 'is the checkpoint of step 2'):
      rundir.load_learner(os.path.join(workdir, 'checkpoints', '2'), step=4)
    with self.assertRaisesRegex(FileNotFoundError, f'^workdir={self.data} holds no run'):
      rundir.load_learner(self.data)
    # A save that a kill interrupted: a reader says so, leaves it and loads the last complete one.
    left = os.path.join(workdir, 'checkpoints', '6.orbax-checkpoint-tmp-123')
    shutil.copytree(os.path.join(workdir, 'checkpoints', '4'), left)
    with mock.patch('sys.stderr', new_callable=io.StringIO) as err:
      self.assertEqual(rundir.load_learner(workdir).step, 4)
    self.assertIn('ignoring an incomplete checkpoint (step 6) left by a run stopped while saving '
                  'it', err.getvalue())
    self.assertTrue(os.path.isdir(left))

  def test_a_run_of_folders_named_in_the_dataset_resumes_and_loads(self):
    workdir = os.path.join(self.tmp, 'named')
    named = dict(dataset=f'folders:{self.data}', data_dir=None)
    self.train(workdir, num_steps=2, **named)  # config.json records the folder as data_dir
    self.assertEqual(rundir.read_config(workdir).data_dir, self.data)
    self.assertEqual(int(self.train(workdir, **named).state.step), 4)  # resumed
    self.assertEqual(rundir.load_learner(workdir).step, 4)
    with self.assertRaisesRegex(ValueError, 'names its folder already'):
      self.config(dataset=f'folders:{self.data}', data_dir=os.path.join(self.tmp, 'other'))

  def test_a_workdir_that_cannot_be_one_is_a_clear_error_and_nothing_is_created(self):
    afile = os.path.join(self.tmp, 'notes.txt')
    with open(afile, 'w') as f:
      f.write('mine')
    with self.assertRaisesRegex(ValueError, f'workdir={afile}: is a file, not a folder'):
      self.train(afile)
    denied = os.path.join(self.tmp, 'locked', 'run')
    real = os.makedirs

    def makedirs(path, *args, **kwargs):  # a folder this user may not write in
      if str(path).startswith(os.path.dirname(denied)):
        raise PermissionError(13, 'Permission denied')
      return real(path, *args, **kwargs)

    with mock.patch('os.makedirs', makedirs):
      with self.assertRaisesRegex(ValueError, 'cannot create it \\(Permission denied\\)'):
        self.train(denied)
    self.assertFalse(os.path.exists(denied))

  @pytest.mark.slow
  def test_a_full_disk_while_checkpointing_is_a_clear_error_keeping_the_last_checkpoint(self):
    workdir = os.path.join(self.tmp, 'run')
    self.train(workdir, num_steps=2)  # a complete checkpoint of step 2
    save = checkpoint.ocp.CheckpointManager.save

    def full(manager, step, *args, **kwargs):  # the disk fills up after step 2
      if step > 2:
        raise OSError(errno.ENOSPC, 'No space left on device')
      return save(manager, step, *args, **kwargs)

    message = (r'^saving the checkpoint of step 4 in .*run/checkpoints failed \(No space left on '
               r'device\): free space there or choose another --workdir; the last complete '
               r'checkpoint, step 2, is kept$')
    with mock.patch.object(checkpoint.ocp.CheckpointManager, 'save', full):
      with self.assertRaisesRegex(OSError, message):  # orbax fails while writing
        self.train(workdir, num_steps=4)
    usage = checkpoint.shutil.disk_usage
    little = lambda path: usage(path)._replace(free=1000)
    with mock.patch.object(checkpoint.shutil, 'disk_usage', little):
      with self.assertRaisesRegex(OSError, message):  # no room: refused before writing
        self.train(workdir, num_steps=4)
    self.assertEqual(checkpoint.Checkpointer(workdir).steps(), [2])
    self.assertEqual([n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                      if checkpoint.TMP in n], [])
    result = self.train(workdir, num_steps=4)  # space again: it resumes from step 2
    self.assertEqual(int(result.state.step), 4)


# evaluate.py run as if the run directory were read-only (a shared or archived run):
# os.access says no for it, and any write into it fails.
READ_ONLY = """
import os, runpy, sys
workdir = os.path.realpath(sys.argv[1].split('=', 1)[1])
access, open_ = os.access, open
os.access = lambda p, m, **k: (False if os.path.realpath(p).startswith(workdir) and m & os.W_OK
                               else access(p, m, **k))
def guarded(path, mode='r', *a, **k):
  if any(c in mode for c in 'wax+') and os.path.realpath(str(path)).startswith(workdir):
    raise PermissionError(13, 'Read-only file system', str(path))
  return open_(path, mode, *a, **k)
import builtins; builtins.open = guarded
sys.argv[0] = 'evaluate.py'
runpy.run_path(os.path.join(os.environ['REPO'], 'experiments', 'evaluate.py'), run_name='__main__')
"""


class ReadOnlyRunTest(absltest.TestCase):

  @pytest.mark.slow
  def test_evaluate_scores_a_run_it_cannot_write_and_writes_where_told(self):
    tmp = self.create_tempdir().full_path
    cache = os.path.join(tmp, 'cache')
    data = write_classes(os.path.join(tmp, 'data'), [f'class{c}' for c in range(10)])
    workdir = os.path.join(tmp, 'run')
    with mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': cache}):
      loop.train_and_evaluate(Config(
          dataset='folders', data_dir=data, algorithm='protonet', ways=2, train_ways=2, shots=1,
          query=2, meta_batch_size=2, channels=4, num_steps=2, checkpoint_every=2,
          eval_tasks=4), workdir, show_progress=False)
    before = os.listdir(workdir), os.path.getmtime(os.path.join(workdir, 'eval.json'))
    env = dict(os.environ, METAJAX_CACHE_DIR=cache, REPO=helpers.REPO,
               PYTHONPATH=helpers.REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    mine = os.path.join(tmp, 'mine.json')
    for args in ([], [f'--out={mine}']):
      out = subprocess.run([sys.executable, '-c', READ_ONLY, f'--workdir={workdir}',
                            '--num_tasks=4', *args],
                           capture_output=True, text=True, env=env, timeout=600)
      self.assertEqual(out.returncode, 0, out.stderr)
      if not args:
        self.assertIn('is read-only: the records are not written', out.stdout)
        self.assertIn('"accuracy"', out.stdout)
    with open(mine) as f:
      self.assertEqual(json.load(f)[0]['metric'], 'accuracy')
    self.assertEqual((os.listdir(workdir), os.path.getmtime(os.path.join(workdir, 'eval.json'))),
                     before)


if __name__ == '__main__':
  absltest.main()
