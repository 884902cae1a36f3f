"""The experiment scripts, run as a user runs them (subprocesses)."""

import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import parameterized
import numpy as np
import pytest

from tests.helpers import REPO, checkpoints, script

FAST = ['--num_steps=60', '--log_every=10', '--checkpoint_every=20', '--eval_tasks=50',
        '--hidden=16,16', '--meta_batch_size=4', '--progress=false']


class ScriptsTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_train_then_evaluate(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    out = script('train.py', f'--workdir={workdir}', *FAST)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertRegex(out.stdout, r'maml +0 steps: [\d.]+ \+- [\d.]+ +1 step: ')
    self.assertRegex(out.stdout, r'pretrained +0 steps')
    self.assertTrue(os.path.getsize(os.path.join(workdir, 'sinusoid_adaptation.png')) > 10_000)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'pretrained', 'eval.json')))
    with open(os.path.join(workdir, 'flags.txt')) as f:
      self.assertIn('--algorithm=maml', f.read())

    with open(os.path.join(workdir, 'eval.json')) as f:
      trained = json.load(f)
    for _ in range(2):  # the same protocol twice: replaced, not repeated
      out = script('evaluate.py', f'--workdir={workdir}', '--num_tasks=30', '--inner_steps=0,2')
      self.assertEqual(out.returncode, 0, out.stderr)
      with open(os.path.join(workdir, 'eval.json')) as f:
        records = json.load(f)
      self.assertEqual(records[:3], trained)  # training's own evaluation is kept
      self.assertEqual([(r['inner_steps'], r['num_tasks'], r['metric']) for r in records],
                       [(0, 50, 'mse'), (1, 50, 'mse'), (10, 50, 'mse'), (0, 30, 'mse'),
                        (2, 30, 'mse')])
    for r in records:
      self.assertGreater(r['mean'], 0)
      self.assertGreater(r['ci95'], 0)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'best')))  # no --eval_every

  @pytest.mark.slow
  def test_progress_tells_the_truth_in_plain_lines(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    out = script('train.py', f'--workdir={workdir}', *FAST, '--progress=true', '--baselines=')
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn('maml on sinusoid: compiling the meta-step\ncompiled in ', out.stderr)
    self.assertNotIn('\r', out.stderr)  # stderr is a pipe: lines, not a bar
    steps = [line for line in out.stderr.splitlines() if line.startswith('maml on sinusoid: ')]
    self.assertEqual(steps[-1].split(',')[0], 'maml on sinusoid: 60/60 steps (100%)')
    self.assertLessEqual(len(steps), 12)
    self.assertIn('evaluating on test tasks: 150/150 tasks (100%)', out.stderr)
    self.assertRegex(out.stdout, r'maml: 60 meta-steps in [\d.]+ s \(compiled in [\d.]+ s\); '
                     r'evaluation [\d.]+ s')
    again = script('train.py', f'--workdir={workdir}', *FAST, '--progress=true', '--baselines=')
    self.assertIn(f'{workdir}: already finished at step 60; evaluating only', again.stderr)
    self.assertRegex(again.stdout, r'maml: already finished at step 60; evaluation [\d.]+ s')
    longer = script('train.py', f'--workdir={workdir}', *FAST, '--num_steps=80',
                    '--progress=true', '--baselines=')
    self.assertIn(f'{workdir}: resuming from step 60 of 80', longer.stderr)
    self.assertIn('maml: 20 meta-steps in', longer.stdout)

  @parameterized.parameters(
      ['--dataset=sinusoid'],
      ['--dataset=omniglot', '--ways=3', '--shots=1', '--query=2', '--channels=8',
       '--meta_batch_size=4'],
      ['--dataset=omniglot', '--algorithm=finetune', '--channels=8', '--meta_batch_size=16',
       '--inner_steps=2'])
  @pytest.mark.slow
  def test_benchmark_prints_its_figures_on_synthetic_data(self, *args):
    out = script('benchmark.py', '--synthetic_data', '--windows=1', '--window_steps=2', *args)
    self.assertEqual(out.returncode, 0, out.stderr)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ('steps_per_s', 'tasks_per_s', 'compile_s', 'peak_rss_mb', 'step_temp_mb'):
      self.assertGreater(figures[key], 0, key)

  @pytest.mark.slow
  def test_benchmark_times_several_algorithms_in_one_run(self):
    out = script('benchmark.py', '--synthetic_data', '--windows=1', '--window_steps=1',
                 '--dataset=omniglot', '--ways=3', '--query=2', '--channels=4',
                 '--meta_batch_size=2', '--algorithms=protonet,relation')
    self.assertEqual(out.returncode, 0, out.stderr)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
    self.assertEqual([r['algorithm'] for r in rows], ['protonet', 'relation'])
    self.assertTrue(all(r['steps_per_s'] > 0 and r['peak_rss_mb'] > 0 for r in rows))
    bad = script('benchmark.py', '--synthetic_data', '--algorithms=protonet,nosuch')
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn('--algorithms: no algorithm nosuch', bad.stderr)

  @pytest.mark.slow
  def test_settings_path_follows_the_run_from_train_and_evaluate(self):
    out = script('settings_path.py', '--num_steps=2', '--eval_tasks=2', '--hidden=4',
                 '--meta_batch_size=2', '--baselines=')
    self.assertEqual(out.returncode, 0, out.stderr)
    lines = out.stdout.splitlines()
    tree = lines[lines.index('metajax/loop.py: train_and_evaluate'):-1]
    self.assertIn('  metajax/run.py: build_run', tree)
    counts = json.loads(lines[-1])
    self.assertEqual(counts['functions'], len(tree))
    # Every move down into another file has its move back up.
    self.assertEqual(counts['moves'], 2 * counts['climbs'])
    self.assertGreaterEqual(counts['files'], 3)

  @pytest.mark.slow
  def test_svm_solvers_agree_with_the_float64_reference(self):
    out = script('svm_solvers.py', '--ways=3', '--batch=2', '--dim=4', '--repeats=1')
    self.assertEqual(out.returncode, 0, out.stderr)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
    mine = [r for r in rows if r['solver'] == 'metajax']
    self.assertEqual(len(mine), 1)
    self.assertLess(mine[0]['alpha_max_error'], 1e-3)
    self.assertGreater(mine[0]['grad_cosine_to_reference'], 0.999)

  def test_compare_refuses_an_algorithm_without_a_counterpart(self):
    out = script('benchmark.py', '--synthetic_data', '--windows=1', '--window_steps=1',
                 '--compare=learn2learn', '--algorithm=reptile')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('--algorithm=reptile', out.stderr)

  def test_torch_protonet_logits_match_metajax(self):
    torch = pytest.importorskip('torch', reason='torch (the bench extra) is not installed')
    sys.path.insert(0, os.path.join(REPO, 'experiments'))
    import l2l_compare  # pylint: disable=g-import-not-at-top
    from metajax.algorithms.protonet import prototype_logits  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    support, query = rng.normal(size=(12, 6)), rng.normal(size=(7, 6))
    labels = rng.permutation(np.repeat(np.arange(4), 3))
    ours = np.asarray(prototype_logits(support, labels, query))[:, :4]
    theirs = l2l_compare.prototype_logits(torch.tensor(support), torch.tensor(labels),
                                          torch.tensor(query)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)

  @pytest.mark.omniglot
  @pytest.mark.slow
  @pytest.mark.long
  def test_omniglot_table_trains_its_rows_and_tests_protonet_on_20_ways(self):
    workdir = self.create_tempdir().full_path
    out = script('omniglot_table.py', f'--workdir={workdir}', '--rows=protonet_5w1s,fomaml_5w1s',
                 '--num_steps=2', '--eval_tasks=4')
    self.assertEqual(out.returncode, 0, out.stderr)
    with open(os.path.join(workdir, 'table.json')) as f:
      table = json.load(f)
    self.assertEqual([(t['row'], t['algorithm'], t['ways'], t['shots'], t['meta_steps'])
                      for t in table],
                     [('protonet_5w1s', 'protonet', 5, 1, 2), ('protonet_5w1s', 'protonet', 20, 1, 2),
                      ('fomaml_5w1s', 'fomaml', 5, 1, 2)])
    self.assertEqual([[r['inner_steps'] for r in t['records']] for t in table[1:]], [[0], [1, 3]])
    for t in table:
      for r in t['records']:
        self.assertEqual((r['num_tasks'], r['metric'], r['split']), (4, 'accuracy', 'test'))
        self.assertTrue(0 <= r['mean'] <= 1)
    self.assertRegex(out.stdout, r'\| protonet_5w1s \| protonet \| 20-way 1-shot \| [\d.]+ \+- '
                     r'[\d.]+ % \| 96.0 \| 2 \|')
    for row in ('protonet_5w1s', 'fomaml_5w1s'):
      self.assertTrue(os.path.exists(os.path.join(workdir, row, 'checkpoints', '2')))

  @pytest.mark.omniglot
  @pytest.mark.slow
  def test_evaluate_from_another_environment_keeps_every_record(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    out = script('train.py', f'--workdir={workdir}', '--dataset=omniglot',
                 '--algorithm=protonet', '--shots=1', '--query=2', '--meta_batch_size=1',
                 '--channels=8', '--num_steps=3', '--eval_tasks=5', '--progress=false')
    self.assertEqual(out.returncode, 0, out.stderr)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['dataset']['data_dir'],
                       os.path.abspath(os.environ['METAJAX_OMNIGLOT_DIR']))
    elsewhere = {k: v for k, v in os.environ.items() if k != 'METAJAX_OMNIGLOT_DIR'}
    out = script('evaluate.py', f'--workdir={workdir}', '--ways=20', '--num_tasks=4', env=elsewhere)
    self.assertEqual(out.returncode, 0, out.stderr)
    with open(os.path.join(workdir, 'eval.json')) as f:
      records = json.load(f)
    self.assertEqual([(r['ways'], r['num_tasks']) for r in records], [(5, 5), (20, 4)])
    typo = os.path.join(self.create_tempdir().full_path, 'omniglott')
    out = script('evaluate.py', f'--workdir={workdir}', f'--data_dir={typo}', env=elsewhere)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn(f'--data_dir={typo} does not exist', out.stderr)
    self.assertFalse(os.path.exists(typo))

  @parameterized.parameters(
      (['--ways=5000'], '--ways=5000: the vinyals train split has only 4400 classes'),
      (['--shots=15', '--query=6'],
       '--shots=15 plus --query=6 is 21 images per class, but each class has only 20'),
      (['--ways=500'], None),  # 400 validation classes, but no validation runs: accepted
  )
  @pytest.mark.omniglot  # below the parameters: each generated test carries the mark
  @pytest.mark.slow
  def test_episode_errors_are_the_ones_the_docs_quote(self, args, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    small = ['--num_steps=1', '--eval_tasks=1', '--meta_batch_size=1', '--channels=8',
             '--progress=false'] + (['--query=1'] if message is None else [])
    # MAML trains on the ways it tests (ProtoNets on 60 by default on Omniglot).
    out = script('train.py', f'--workdir={workdir}', '--dataset=omniglot', '--algorithm=maml',
                 *args, *small)
    if message is None:
      self.assertEqual(out.returncode, 0, out.stderr)
      return
    self.assertIn(f'error: {message}\n', out.stderr)
    with open(os.path.join(REPO, 'docs', 'data.md')) as f:  # the errors the docs quote
      self.assertIn(f'`{message}`', ' '.join(f.read().split()))
    self.assertFalse(os.path.exists(workdir))

  @parameterized.parameters(('train.py', '--workdir'), ('benchmark.py', '--windows'),
                            ('second_order.py', '--analyse_at'), ('evaluate.py', '--num_tasks'))
  def test_help_shows_the_scripts_flags_and_metajaxs(self, name, own_flag):
    out = script(name, '--help')
    self.assertIn(out.returncode, (0, 1), out.stderr)  # absl's --help exits with 1
    self.assertIn(f'  {own_flag}', out.stdout)
    if name != 'evaluate.py':  # evaluate.py takes no Config flags: the run has them
      for flag in ('--algorithm', '--inner_lr', '--dataset', '--meta_batch_size'):
        self.assertIn(f'  {flag}', out.stdout)
    self.assertNotIn('--xla_', out.stdout)  # only --helpfull lists every module's flags

  def test_omniglot_table_refuses_an_unknown_row(self):
    out = script('omniglot_table.py', '--rows=maml_5w1s,maml_1w1s')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('--rows: each must be one of protonet_5w1s', out.stderr)

  @pytest.mark.slow
  def test_sigkill_and_resume_gives_the_same_final_metrics(self):
    args = ['--num_steps=4000', '--checkpoint_every=100', '--log_every=100',
            '--eval_tasks=100', '--baselines=', '--plot=false', '--progress=false']
    reference = os.path.join(self.create_tempdir().full_path, 'ref')
    out = script('train.py', f'--workdir={reference}', *args)
    self.assertEqual(out.returncode, 0, out.stderr)

    workdir = os.path.join(self.create_tempdir().full_path, 'killed')
    env = {**os.environ, 'PYTHONPATH': REPO}
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
                             f'--workdir={workdir}', *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoints(workdir) and proc.poll() is None:
      time.sleep(0.05)
    busy = script('train.py', f'--workdir={workdir}', *args)  # the same command, launched twice
    self.assertNotEqual(busy.returncode, 0)
    self.assertIn(f'is in use by process {proc.pid} on', busy.stderr)
    self.assertNotIn('Traceback', busy.stderr)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertTrue(os.path.exists(os.path.join(workdir, 'run.lock')))  # left by the killed run
    killed_at = checkpoints(workdir)
    self.assertEqual(proc.returncode, -signal.SIGKILL)
    self.assertTrue(killed_at and killed_at[-1] < 4000, killed_at)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'eval.json')))

    out = script('train.py', f'--workdir={workdir}', *args)
    self.assertEqual(out.returncode, 0, out.stderr)
    load = lambda d, name: open(os.path.join(d, name)).read()
    self.assertEqual(json.loads(load(workdir, 'eval.json')),
                     json.loads(load(reference, 'eval.json')))
    def rows(d):  # every logged metric but the clock
      return [{k: v for k, v in json.loads(l).items() if k != 'time_s'}
              for l in load(d, 'metrics.jsonl').splitlines()]
    self.assertEqual(rows(workdir), rows(reference))  # every logged step, no duplicates
    clock = [json.loads(l)['time_s'] for l in load(workdir, 'metrics.jsonl').splitlines()]
    self.assertEqual(clock, sorted(clock))  # the resumed run's clock goes on
    self.assertFalse(os.path.exists(os.path.join(workdir, 'run.lock')))  # taken over, released

  @parameterized.parameters(
      (['--shots=0'], '--shots=0: must be a positive integer'),
      (['--shots=-3'], '--shots=-3: must be a positive integer'),
      (['--inner_steps=0'], '--inner_steps=0: must be a positive integer'),
      (['--num_steps=-1'], '--num_steps=-1: must be a positive integer'),
      (['--algorithm=mamll'], "--algorithm='mamll': choose one of maml"),
      (['--inner_optimizer=lbfgs'], "--inner_optimizer='lbfgs': choose one of sgd"),
      (['--meta_optimizer=adamm'], "--meta_optimizer='adamm': not an optax optimizer"),
      (['--ways=5'], '--ways=5: sinusoid regression has no classes'),
      (['--dataset=omniglot', '--algorithm=protonet', '--remat'],
       '--remat=True: --algorithm=protonet does not use it (its settings: none)'),
      (['--algorithm=reptile', '--backprop_steps=2'],
       '--backprop_steps=2: --algorithm=reptile does not use it'),
      (['--algorithm=finetune'], '--algorithm=\'finetune\': finetune handles classification'),
  )
  def test_bad_flags_give_a_clear_error_and_write_nothing(self, args, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    out = script('train.py', f'--workdir={workdir}', *args)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn(message, out.stderr)
    self.assertNotIn('Traceback', out.stderr)
    self.assertFalse(os.path.exists(workdir))

  @pytest.mark.slow
  def test_workdir_of_another_config_is_refused(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.assertEqual(script('train.py', f'--workdir={workdir}', *FAST,
                            '--baselines=').returncode, 0)
    out = script('train.py', f'--workdir={workdir}', *FAST, '--algorithm=anil')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('--algorithm=maml there, anil here', out.stderr)

  @pytest.mark.slow
  def test_huge_inner_lr_stops_with_a_non_finite_error(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    out = script('train.py', f'--workdir={workdir}', *FAST, '--inner_lr=1e30',
                 '--baselines=')
    self.assertNotEqual(out.returncode, 0)
    self.assertRegex(out.stderr, r'meta-gradient at meta-step 1 has a NaN or an infinity')
    self.assertEqual(checkpoints(workdir), [])
