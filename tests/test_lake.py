"""Lake et al.'s one-shot protocol: within-alphabet episodes, paired drawers, `experiments/lake.py`."""

import functools
import importlib.util
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from metajax import rundir
from metajax.data import omniglot, omniglot_augment
from tests.helpers import OMNIGLOT_DIR, REPO, script


@functools.cache  # its absl flags can be defined once per process
def _lake_module():
  spec = importlib.util.spec_from_file_location('lake', os.path.join(REPO, 'experiments',
                                                                     'lake.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _train(workdir, *args, steps=3, channels=8):
  out = script('train.py', f'--workdir={workdir}', '--dataset=omniglot', '--algorithm=protonet',
               '--train_ways=20', '--shots=1', '--query=1', f'--channels={channels}',
               f'--num_steps={steps}', '--eval_tasks=4', '--progress=false', *args)
  assert out.returncode == 0, out.stderr
  return workdir


@pytest.mark.omniglot
class EvaluationEpisodesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.lake = _lake_module()
    cls.characters, cls.images = cls.lake.evaluation_set(OMNIGLOT_DIR)

  def test_the_evaluation_set_at_full_size(self):
    self.assertEqual(self.images.shape, (659, 20, 105, 105))
    self.assertLen({c.split('/')[0] for c in self.characters}, 20)
    self.assertEqual(self.images.dtype, np.uint8)
    self.assertGreater(self.images.mean(), 200)  # as drawn: paper white, strokes dark

  def test_episodes_are_one_alphabet_one_drawer_against_another(self):
    sampler = self.lake.sampler(self.characters, self.images, seed=0)
    seen = set()
    for i in range(30):
      task = sampler.episode(np.random.default_rng([0, i]))
      chosen = sampler.choose(np.random.default_rng([0, i]))[:, 0]
      self.assertEqual(task.support.x.shape, (20, 105, 105, 1))
      self.assertEqual(task.query.x.shape, (20, 105, 105, 1))
      alphabets = {self.characters[c].split('/')[0] for c in chosen}
      self.assertLen(alphabets, 1)
      seen |= alphabets
      self.assertLen(set(chosen), 20)
      drawers = []
      for split in (task.support, task.query):
        common = set(range(20))  # the drawers whose drawings every image of the split is
        for x, y in zip(split.x, split.y):
          pixels = np.round(x[..., 0] * 255).astype(np.uint8)
          common &= {d for d in range(20) if np.array_equal(self.images[chosen[y], d], pixels)}
        drawers.append(common)
      support, query = drawers
      self.assertTrue(support)  # one drawer drew every support image
      self.assertTrue(query)  # and one every query
      self.assertFalse(len(support | query) == 1)  # not the same one
    self.assertGreater(len(seen), 10)  # episodes spread over the 20 alphabets


@pytest.mark.omniglot
@pytest.mark.slow
class LakeScriptTest(parameterized.TestCase):

  def test_scores_episodes_and_lakes_runs_with_a_loaded_learner(self):
    lake = _lake_module()
    workdir = _train(os.path.join(self.create_tempdir().full_path, 'run'), '--split=lake',
                     '--within_alphabet', '--paired_drawers', '--ways=20', steps=30,
                     channels=16)
    out = script('lake.py', f'--workdir={workdir}', '--num_episodes=40')
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertRegex(out.stdout, r'error [\d.]+ \+- [\d.]+ % over 40 episodes of 20-way 1-shot')
    self.assertNotIn('WARNING', out.stdout)
    with open(os.path.join(workdir, 'eval.json')) as f:
      record = [r for r in json.load(f) if r['split'] == 'lake_one_shot'][0]
    self.assertEqual((record['num_tasks'], record['ways'], record['shots'], record['query']),
                     (40, 20, 1, 1))
    self.assertEqual(record['evaluation_characters_in_training'], 0)
    self.assertLess(record['mean'], 0.9)  # chance: 19/20 wrong (30 steps: about 0.8)
    self.assertEqual(set(record['per_alphabet']),
                     set(self.alphabets_of(lake, 40)))

    # Lake's published layout: run folders, class_labels.txt pairing each test
    # image with its training image, paths relative to the runs' folder.
    characters, images = lake.evaluation_set(OMNIGLOT_DIR)
    runs = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    expected = {}
    learner = rundir.load_learner(workdir)
    for r, alphabet in enumerate(['Angelic', 'Tengwar'], 1):
      name = f'run{r:02d}'
      chars = [i for i, c in enumerate(characters) if c.startswith(alphabet + '/')][:20]
      order = rng.permutation(20)  # training image j shows character chars[order[j]]
      for sub in ('training', 'test'):
        os.makedirs(os.path.join(runs, name, sub))
      lines = []
      for j in range(20):
        _save(images[chars[order[j]], 3], os.path.join(runs, name, 'training',
                                                       f'class{j + 1:02d}.png'))
      for i in range(20):
        _save(images[chars[i], 11], os.path.join(runs, name, 'test', f'item{i + 1:02d}.png'))
        lines.append(f'{name}/test/item{i + 1:02d}.png '
                     f'{name}/training/class{int(np.flatnonzero(order == i)[0]) + 1:02d}.png')
      with open(os.path.join(runs, name, 'class_labels.txt'), 'w') as f:
        f.write('\n'.join(lines[k] for k in rng.permutation(20)) + '\n')
      # Independently: the learner on the arrays, labels the characters themselves.
      predicted = learner.predict(images[[chars[order[j]] for j in range(20)], 3],
                                  [chars[order[j]] for j in range(20)],
                                  images[chars, 11])
      expected[name] = float(np.mean(predicted != np.array(chars)))
    out = script('lake.py', f'--workdir={workdir}', f'--runs_dir={runs}')
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn('over 2 runs of 20-way 1-shot', out.stdout)
    with open(os.path.join(workdir, 'eval.json')) as f:
      records = [r for r in json.load(f) if r['split'] == 'lake_one_shot']
    self.assertLen(records, 2)  # the episodes' record is kept beside the runs'
    self.assertEqual(records[1]['per_run'], expected)
    self.assertAlmostEqual(records[1]['mean'], np.mean(list(expected.values())))

    # An ensemble of the run with itself, each member averaged over the images
    # and a distorted copy: another protocol, kept beside the others.
    out = script('lake.py', f'--workdir={workdir},{workdir}', '--tta=2', '--num_episodes=5')
    self.assertEqual(out.returncode, 0, out.stderr)
    with open(os.path.join(workdir, 'eval.json')) as f:
      records = [r for r in json.load(f) if r['split'] == 'lake_one_shot']
    self.assertLen(records, 3)
    self.assertIn('test-time augmentation x2, ensemble of', records[2]['source'])
    self.assertEqual(records[2]['algorithm'], 'protonet+protonet')

    empty = self.create_tempdir().full_path
    out = script('lake.py', f'--workdir={workdir}', f'--runs_dir={empty}')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn(f'--runs_dir={empty}: no run folders (run01 ... run20) in it', out.stderr)

  def test_a_run_that_trained_on_evaluation_alphabets_is_flagged(self):
    workdir = _train(os.path.join(self.create_tempdir().full_path, 'run'))  # the vinyals split
    elsewhere = {k: v for k, v in os.environ.items() if k != 'METAJAX_OMNIGLOT_DIR'}
    out = script('lake.py', f'--workdir={workdir}', '--num_episodes=4', env=elsewhere)  # the
    # data folder the run recorded
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertRegex(out.stdout, r'WARNING: \d+ of the training classes of .*run are '
                     r'characters of the evaluation set')
    with open(os.path.join(workdir, 'eval.json')) as f:
      record = [r for r in json.load(f) if r['split'] == 'lake_one_shot'][0]
    self.assertGreater(record['evaluation_characters_in_training'], 1000)

  @staticmethod
  def alphabets_of(lake, num_episodes):
    characters, images = lake.evaluation_set(OMNIGLOT_DIR)
    sampler = lake.sampler(characters, images, seed=0)
    return {characters[sampler.choose(np.random.default_rng([0, i]))[0, 0]].split('/')[0]
            for i in range(num_episodes)}


class AffineTest(absltest.TestCase):

  def test_no_distortion_is_the_identity(self):
    x = np.random.default_rng(0).random((3, 105, 105)).astype(np.float32)
    same = omniglot_augment.random_affine(x, np.random.default_rng(1), 1.0, rotation=0, shear=0,
                                          scale=(1, 1), shift=0)
    np.testing.assert_allclose(same, x, atol=1e-6)

  def test_a_dot_lands_where_the_affine_map_sends_it(self):
    # A blob away from the centre; its ink-weighted centroid is mapped by
    # x -> A (x - c) + c + t, A = rotation @ shear @ scale, computed here by hand.
    x = np.zeros((6, 105, 105), np.float32)
    x[:, 30:36, 65:71] = 1.0
    out = omniglot_augment.random_affine(x, np.random.default_rng(4), 0.0)
    rng = np.random.default_rng(4)  # the same draws, in the function's order
    theta = np.deg2rad(rng.uniform(-10, 10, 6))
    rho, s = rng.uniform(-0.3, 0.3, (6, 2)), rng.uniform(0.8, 1.2, (6, 2))
    t = rng.uniform(-2 / 105, 2 / 105, (6, 2)) * 105
    centre = np.array([52.0, 52.0])
    rows, cols = np.mgrid[:105, :105]
    for i in range(6):
      a = (np.array([[np.cos(theta[i]), -np.sin(theta[i])], [np.sin(theta[i]), np.cos(theta[i])]])
           @ np.array([[1, rho[i, 0]], [rho[i, 1], 1]]) @ np.diag(s[i]))
      expected = a @ (np.array([67.5, 32.5]) - centre) + centre + t[i]  # (x, y)
      got = np.array([(out[i] * cols).sum(), (out[i] * rows).sum()]) / out[i].sum()
      np.testing.assert_allclose(got, expected, atol=0.5)
      self.assertAlmostEqual(out[i].sum() / x[i].sum(), abs(np.linalg.det(a)), delta=0.1)


class PresetTest(absltest.TestCase):

  def test_the_lake_preset_is_the_protonet_preset_on_the_background_set(self):
    from metajax import cli  # pylint: disable=g-import-not-at-top
    from metajax.config import Config  # pylint: disable=g-import-not-at-top
    config = cli.config_from_flagfile(os.path.join(REPO, 'experiments', 'configs',
                                                   'omniglot_lake_protonet.flags'))
    self.assertEqual(config, Config(algorithm='protonet', dataset='omniglot', split='lake',
                                    rotations=True).validate())
    self.assertEqual((config.train_ways, config.num_steps, config.within_alphabet),
                     (60, 2000, False))

  def test_the_lake_transductive_preset_pretrains_on_the_background_set(self):
    from metajax import cli  # pylint: disable=g-import-not-at-top
    from metajax.config import Config  # pylint: disable=g-import-not-at-top
    config = cli.config_from_flagfile(os.path.join(REPO, 'experiments', 'configs',
                                                   'omniglot_lake_transductive.flags'))
    self.assertEqual(config, Config(algorithm='transductive', dataset='omniglot', split='lake',
                                    rotations=True, eval_inner_steps=(0,)).validate())
    self.assertEqual((config.num_steps, config.meta_batch_size, config.augment),
                     (3000, 128, True))


def _save(pixels, path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(pixels).save(path)


if __name__ == '__main__':
  absltest.main()
