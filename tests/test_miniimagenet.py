"""miniImageNet from both of its usual layouts, on a small generated fixture."""

import os

from absl.testing import parameterized
import numpy as np
import pytest

from metajax import cli
from metajax import loop
from metajax.config import Config
from metajax.data import DATASETS, miniimagenet
from metajax.data.source import EpisodeSpec
from tests.helpers import CLASSES, PER_CLASS, make_fixture

MINI = DATASETS['miniimagenet']


class MiniImageNetTest(parameterized.TestCase):

  def test_csv_and_pickle_layouts_give_identical_arrays(self):
    tmp = self.create_tempdir().full_path
    as_csv = make_fixture(os.path.join(tmp, 'csv'), 'csv')
    as_pickle = make_fixture(os.path.join(tmp, 'pickle'), 'pickle')
    self.assertEqual(miniimagenet.detect_format(as_csv), 'csv')
    self.assertEqual(miniimagenet.detect_format(as_pickle), 'pickle')
    for subset, count in CLASSES.items():
      names_a, a = miniimagenet.load(subset, as_csv, cache_dir=os.path.join(tmp, 'cache'),
                                     show_progress=False)
      names_b, b = miniimagenet.load(subset, as_pickle, show_progress=False)
      self.assertEqual(a.shape, (count, PER_CLASS, 84, 84, 3))
      self.assertEqual(a.dtype, np.uint8)
      self.assertEqual(names_a, names_b)
      np.testing.assert_array_equal(a, b)
    # One cache per split, of the current pipeline's version (older ones are never read).
    caches = sorted(os.listdir(os.path.join(tmp, 'cache')))
    self.assertLen(caches, 3)
    self.assertTrue(all(c.startswith(f'miniimagenet_{s}_v2_') for c, s in
                        zip(caches, sorted(CLASSES))), caches)

  def test_missing_data_names_both_layouts(self):
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, r'train.csv.*images/.*mini-imagenet-cache'):
      miniimagenet.detect_format(empty)

  def test_episodes_are_normalised_and_augmentation_keeps_shapes(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    source = MINI.source(EpisodeSpec(ways=3, train_ways=3, shots=2, query=3, eval_query=3,
                                     batch_size=2), data_dir=data_dir, augment=True)
    batch = source.train_batch(0)
    self.assertEqual(batch.support.x.shape, (2, 6, 84, 84, 3))
    self.assertEqual(batch.query.x.dtype, np.float32)
    np.testing.assert_array_equal(batch.support.x, source.train_batch(0).support.x)
    test = next(source.eval_batches('test', 4))
    self.assertEqual(test.query.x.shape, (4, 9, 84, 84, 3))
    # Normalised: (x - mean) / std with x in [0, 1].
    raw = (test.query.x * miniimagenet.STD + miniimagenet.MEAN)
    self.assertGreaterEqual(raw.min(), -1e-5)
    self.assertLessEqual(raw.max(), 1 + 1e-5)
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 84, 84, 3)).astype(np.float32)
    out = miniimagenet.augment(x, np.random.default_rng(1))
    self.assertEqual(out.shape, x.shape)
    np.testing.assert_array_equal(out, miniimagenet.augment(x, np.random.default_rng(1)))

  def test_impossible_episode_names_the_setting_and_the_scripts_name_the_flag(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    source = MINI.source(EpisodeSpec(ways=4, train_ways=4, shots=1, query=1, eval_query=1),
                         data_dir=data_dir)
    source.eval_batches('test', 1)  # the test split has 4 classes: fine
    with self.assertRaisesRegex(ValueError, '^ways=4: the miniimagenet val split has only 3') as e:
      next(source.eval_batches('val', 1))  # only a run that validates needs 4 val classes
    self.assertTrue(cli.flag_words(e.exception).startswith(
        '--ways=4: the miniimagenet val split has only 3'))

  @pytest.mark.slow
  def test_protonet_trains_and_evaluates_on_the_fixture(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'csv')
    config = Config(dataset='miniimagenet', algorithm='protonet', ways=3, shots=1, query=3,
                    meta_batch_size=1, channels=8, num_steps=10, log_every=5,
                    checkpoint_every=10, eval_tasks=20, data_dir=data_dir, augment=True)
    result = loop.train_and_evaluate(config, self.create_tempdir().full_path,
                                     show_progress=False)
    (record,) = result.records
    self.assertEqual((record['metric'], record['num_tasks']), ('accuracy', 20))
    self.assertGreater(record['mean'], 1 / 3)  # colours make the classes easy

  def test_episode_sampler_gives_seeded_tasks_of_any_split(self):
    import metajax  # pylint: disable=g-import-not-at-top
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    sampler = metajax.episode_sampler('miniimagenet', split='val', ways=3, shots=1, query=2,
                                      data_dir=data_dir)
    tasks = sampler.batch(0, num_tasks=2)
    self.assertEqual(tasks.support.x.shape, (2, 3, 84, 84, 3))
    self.assertEqual(tasks.query.x.shape, (2, 6, 84, 84, 3))
    self.assertEqual(sorted(set(tasks.query.y[0].tolist())), [0, 1, 2])
    np.testing.assert_array_equal(sampler.batch(0, 2).query.x, tasks.query.x)
    other = metajax.episode_sampler('miniimagenet', split='val', ways=3, shots=1, query=2,
                                    data_dir=data_dir, seed=5)
    self.assertFalse(np.array_equal(other.batch(0, 2).query.x, tasks.query.x))
    with self.assertRaisesRegex(ValueError, "^dataset='sinusoid': episodes of classes"):
      metajax.episode_sampler('sinusoid')

  def test_errors_name_the_setting_the_number_came_from_and_come_before_training(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    base = dict(dataset='miniimagenet', algorithm='protonet', shots=1, query=1, channels=4,
                num_steps=2, eval_tasks=2, data_dir=data_dir)
    with self.assertRaisesRegex(ValueError, '^train_ways=6: the miniimagenet train split has '
                                'only 5 classes'):
      MINI.source(EpisodeSpec(ways=3, train_ways=6, shots=1, query=1), data_dir=data_dir)
    source = MINI.source(EpisodeSpec(ways=3, train_ways=3, shots=1, query=1, eval_query=12),
                         data_dir=data_dir)
    with self.assertRaisesRegex(ValueError, '^shots=1 plus eval_query=12 is 13 images'):
      next(source.eval_batches('test', 1))
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    with self.assertRaisesRegex(ValueError, '^ways=5: the miniimagenet test split has only 4'):
      loop.train_and_evaluate(Config(**base, ways=5), workdir, show_progress=False)
    self.assertFalse(os.path.exists(workdir))  # refused before anything was written
