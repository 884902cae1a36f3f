"""Every code block of README.md and docs/ runs as written (each in a fresh interpreter).

Python blocks run in a fresh interpreter in a temporary folder; those that
read the real Omniglot or a trained run get their own tests below, as do the
bash blocks that train (run with a few steps; the same commands otherwise).
The site itself is built by `mkdocs build --strict` in CI.
"""

import glob
import os
import re
import subprocess
import sys

from absl.testing import parameterized
import pytest

from metajax import loop, rundir
from metajax.config import Config
from tests import helpers

PAGES = [os.path.join(helpers.REPO, 'README.md')] + sorted(
    glob.glob(os.path.join(helpers.REPO, 'docs', '*.md')))


def _blocks(language):
  found = []
  for page in PAGES:
    with open(page) as f:
      found += [(os.path.relpath(page, helpers.REPO), code)
                for code in re.findall(rf'```{language}\n(.*?)```', f.read(), re.S)]
  return found


BLOCKS = _blocks('python')
NEEDS_RUN = 'runs/protonet_5w1s'  # the block that loads a trained run
OWN_DATA = 'my_images'  # the blocks of "Your own data"
NEW_ALGORITHM = "register(AlgorithmSpec("  # the guide to writing an algorithm
NEEDS_DATA = ("'omniglot'", NEEDS_RUN, OWN_DATA)  # blocks that read the real Omniglot files
BASH_BLOCKS = [code for _, code in _blocks('bash')]
(OWN_DATA_COMMANDS,) = [b for b in BASH_BLOCKS if OWN_DATA in b]
(TIME_TO_ACCURACY,) = [b for b in BASH_BLOCKS if 'time_to_accuracy.py' in b]
# Appended to each training command of that block: the same runs, two steps long on
# two tasks a step, validated once and tested on 4 tasks after one inner step.
# Appended to the two training commands of "Your own data": a third of their steps,
# fewer test episodes (the accuracies the page quotes are from the commands as written).
OWN_DATA_SHORT = ' --num_steps=100 --eval_tasks=50'
SHORT = (' --num_steps=2 --meta_batch_size=2 --eval_every=2 --val_tasks=4 --eval_tasks=4 '
         '--eval_inner_steps=1')


def run_block(code, cwd):
  env = {**os.environ, 'PYTHONPATH': helpers.REPO}
  return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


class DocsTest(parameterized.TestCase):

  def test_the_readme_and_the_docs_have_python_blocks(self):
    pages = {page for page, _ in BLOCKS}
    self.assertIn('README.md', pages)
    self.assertGreaterEqual(len(pages), 4)

  @parameterized.named_parameters(
      *[(f'{page.replace("/", "_").replace(".", "_")}_{i}', code)
        for i, (page, code) in enumerate(BLOCKS) if not any(n in code for n in NEEDS_DATA)])
  @pytest.mark.slow
  def test_block_runs_as_written(self, code):
    out = run_block(code, self.create_tempdir().full_path)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertTrue(out.stdout.strip(), 'a block should print its result')

  @pytest.mark.omniglot
  def test_episodes_block_prints_the_shapes_it_shows(self):
    (code,) = [b for _, b in BLOCKS if 'episode_sampler' in b]
    out = run_block(code, self.create_tempdir().full_path)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    shown = code.split('# (', 1)[1].strip()
    self.assertEqual(out.stdout.strip(), '(' + shown)

  @pytest.mark.omniglot
  @pytest.mark.slow
  @pytest.mark.long
  def test_your_own_data_blocks_train_mix_sources_and_classify_files(self):
    cwd = self.create_tempdir().full_path
    helpers.omniglot_folders(os.path.join(cwd, OWN_DATA), characters=100, flat=True)
    os.symlink(os.path.join(helpers.REPO, 'experiments'), os.path.join(cwd, 'experiments'))
    env = {**os.environ, 'PYTHONPATH': helpers.REPO,
           'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'],
           'METAJAX_CACHE_DIR': os.path.join(cwd, 'cache')}
    lines = OWN_DATA_COMMANDS.replace('\\\n', ' ').splitlines()
    self.assertLen([line for line in lines if 'train.py' in line], 2)
    commands = '\n'.join(line + OWN_DATA_SHORT if 'train.py' in line else line
                         for line in lines)
    out = subprocess.run(['bash', '-ec', commands], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=1800, check=False)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    print(out.stdout)  # the figures the docs quote (pytest -s shows them)
    (proto,) = rundir.read_eval(os.path.join(cwd, 'runs', 'my_protonet'))
    self.assertGreater(proto['mean'], 0.6)  # 5-way: chance is 0.2
    mixed = rundir.read_eval(os.path.join(cwd, 'runs', 'my_mixed'))
    self.assertEqual([r['source'] for r in mixed], ['omniglot', 'folders:my_images'])
    self.assertTrue(all(r['mean'] > 0.4 and r['episodes'] == 'variable' for r in mixed))
    compiles = re.search(r'compiled (\d+) times', out.stdout)
    bound = re.findall(r'of at most (\d+) shapes', out.stderr)
    self.assertTrue(compiles and bound, out.stdout + out.stderr[-2000:])
    self.assertLessEqual(int(compiles.group(1)), int(bound[-1]))
    (code,) = [b for _, b in BLOCKS if OWN_DATA in b]
    shown = run_block(code, cwd)
    self.assertEqual(shown.returncode, 0, shown.stderr[-3000:])
    self.assertGreaterEqual(int(shown.stdout.split()[0]), 8, shown.stdout)  # chance: 3 of 15

  @pytest.mark.omniglot
  @pytest.mark.slow
  @pytest.mark.long
  def test_time_to_accuracy_block_trains_validates_and_plots(self):
    cwd = self.create_tempdir().full_path
    os.symlink(os.path.join(helpers.REPO, 'experiments'), os.path.join(cwd, 'experiments'))
    lines = TIME_TO_ACCURACY.replace('\\\n', ' ').splitlines()
    self.assertLen([line for line in lines if 'train.py' in line], 9)
    commands = '\n'.join(line + SHORT if 'train.py' in line else line for line in lines)
    env = {**os.environ, 'PYTHONPATH': helpers.REPO,
           'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']}
    out = subprocess.run(['bash', '-ec', commands], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=1800, check=False)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    labels = ('MAML', 'fo-MAML', 'MAML++', 'MAML-zero', 'fo-MAML-zero', 'MAML++-zero')
    rows = [line.split()[:3] for line in out.stdout.splitlines()
            if line.split()[:1] and line.split()[0] in labels]
    self.assertEqual(rows, [[label, setting, '2'] for setting in ('5w1s', '20w1s')
                            for label in labels[:3]]
                     + [[label, '20w1s', '2'] for label in labels[3:]])
    self.assertTrue(os.path.exists(os.path.join(cwd, 'runs', 'time_to_accuracy.png')))

  @pytest.mark.omniglot
  @pytest.mark.slow
  def test_block_that_loads_a_trained_run(self):
    codes = [b for _, b in BLOCKS if NEEDS_RUN in b]  # the README's and the data guide's
    self.assertNotEmpty(codes)
    cwd = self.create_tempdir().full_path
    config = Config(dataset='omniglot', algorithm='protonet', ways=5, shots=1, query=2,
                    meta_batch_size=1, channels=8, num_steps=5, log_every=5, checkpoint_every=5,
                    eval_tasks=5, data_dir=helpers.OMNIGLOT_DIR)
    loop.train_and_evaluate(config, os.path.join(cwd, NEEDS_RUN), show_progress=False)
    for code in set(codes):
      out = run_block(code, cwd)
      self.assertEqual(out.returncode, 0, out.stderr[-3000:])
      labels = set(int(v) for v in re.findall(r'-?\d+', out.stdout))
      self.assertTrue(labels and labels <= {3, 14, 15, 92, 65}, out.stdout)

  @pytest.mark.slow
  @pytest.mark.omniglot
  def test_new_algorithm_block_registers_trains_and_beats_chance(self):
    (code,) = [b for _, b in BLOCKS if NEW_ALGORITHM in b]
    out = run_block(code, self.create_tempdir().full_path)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn("'centroid_metric': 'cosine'", out.stdout)
    accuracy = float(re.search(r'centroid +accuracy: ([0-9.]+) \+- [0-9.]+ %', out.stdout).group(1))
    self.assertGreater(accuracy, 40, out.stdout)  # percent; 5-way: chance is 20
