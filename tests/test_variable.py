"""Meta-Dataset episodes and tfds sources (a mixed run: tests/test_readme.py, "Your own data")."""

import os

from absl.testing import absltest, parameterized
import numpy as np
import pytest

from metajax import loop
from metajax.config import Config
from metajax.data import episodes, tfds_source, variable
from metajax.data.source import EpisodeSettings
from metajax.run import build_run


def ragged_sampler(counts, seed=0):
  """A sampler whose image j of class c has pixel (0, 0) = c and pixel (0, 1) = j."""
  images = np.zeros((sum(counts), 8, 8, 1), np.uint8)
  row = 0
  for c, n in enumerate(counts):
    images[row:row + n, 0, 0, 0] = c
    images[row:row + n, 0, 1, 0] = np.arange(n)
    row += n
  classes = np.stack([np.arange(len(counts)), np.zeros(len(counts), int)], -1)
  return episodes.EpisodeSampler(images, classes, 2, 1, 1, seed, counts=np.array(counts))


class VariableEpisodeTest(parameterized.TestCase):

  def test_episodes_follow_the_meta_dataset_sampler(self):
    counts = [20, 7, 40, 240, 12, 9, 25, 60, 5, 18, 33, 150]
    sampler = variable.VariableEpisodeSampler(ragged_sampler(counts), max_ways=8,
                                              max_support=120, seed=3)
    ways_seen = set()
    for index in range(30):
      task = sampler.batch(index, 1)
      support, query = [episodes_first(split) for split in task]
      for split in (support, query):
        self.assertIn(split.x.shape[0], variable.BUCKETS)
        np.testing.assert_array_equal(split.y[~split.mask], -1)
        np.testing.assert_array_equal(split.x[~split.mask], 0)
      ways = int(support.y.max()) + 1
      ways_seen.add(ways)
      self.assertBetween(ways, 5, 8)
      self.assertLessEqual(int(support.mask.sum()), 120)
      ids = lambda s: np.round(s.x[s.mask][:, 0, :2, 0] * 255).astype(int)
      s_ids, q_ids = ids(support), ids(query)
      label_class = {}
      for (c, _), label in zip(np.concatenate([s_ids, q_ids]),
                               np.concatenate([support.y[support.mask], query.y[query.mask]])):
        self.assertEqual(label_class.setdefault(int(label), int(c)), int(c))  # a class a label
      classes = [label_class[l] for l in range(ways)]
      self.assertLen(set(classes), ways)
      query_per_class = min(10, min(counts[c] for c in classes) // 2)
      for label, c in enumerate(classes):
        shots = int(np.sum(support.y[support.mask] == label))
        self.assertEqual(int(np.sum(query.y[query.mask] == label)), query_per_class)
        self.assertBetween(shots, 1, min(100, counts[c] - query_per_class))
      self.assertEmpty({tuple(i) for i in s_ids} & {tuple(i) for i in q_ids})  # disjoint
      self.assertLen({tuple(i) for i in s_ids}, len(s_ids))  # no image twice
    self.assertGreater(len(ways_seen), 2)
    again = sampler.batch(4, 1)
    np.testing.assert_array_equal(again.support.x, sampler.batch(4, 1).support.x)
    batch = sampler.batch(0, 3)  # several episodes: one padded shape
    self.assertEqual(batch.support.mask.shape[0], 3)

  def test_settings_that_cannot_work_are_errors_naming_the_flag(self):
    with self.assertRaisesRegex(ValueError, r'--episodes=\'variable\': episodes of varying ways '
                                'need a learner whose classes come from the support set'):
      Config(dataset='omniglot', algorithm='maml', episodes='variable').validate()
    with self.assertRaisesRegex(ValueError, r'--max_support=4: must be at least --max_ways=5'):
      EpisodeSettings(episodes='variable', max_ways=5, max_support=4).validate()
    with self.assertRaisesRegex(ValueError, 'has 4 classes; Meta-Dataset episodes have at least 5'):
      variable.VariableEpisodeSampler(ragged_sampler([5, 5, 5, 5]))
    with self.assertRaisesRegex(ValueError, 'the train split has 1 class; Meta-Dataset'):
      variable.VariableEpisodeSampler(episodes.EpisodeSampler(
          np.zeros((1, 4, 8, 8), np.uint8), np.zeros((1, 2), int), 1, 1, 1, 0))


def episodes_first(split):
  return type(split)(*(v[0] for v in split))


class TfdsSourceTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_any_tfds_dataset_is_split_by_class_under_mock_data(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    examples = {split: [{'image': rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                         'label': i % 100, 'coarse_label': i % 20} for i in range(n)]
                for split, n in (('train', 600), ('test', 200))}

    def as_data_source(self, split, *args, **kwargs):
      del self, args, kwargs
      return examples[split]

    tmp = self.create_tempdir().full_path
    with absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': tmp}), \
        tfds.testing.mock_data(as_data_source_fn=as_data_source):
      config = Config(dataset='tfds:cifar100', split='random', algorithm='protonet', ways=5,
                      shots=1, query=2, meta_batch_size=1, channels=4, num_steps=2, log_every=1,
                      checkpoint_every=2, eval_tasks=4)
      run = build_run(config, show_progress=False)
      self.assertEqual((run.config.image_size, run.config.image_channels), (32, 3))
      self.assertEqual(run.source.num_train_classes, 60)
      self.assertEqual(run.source.train_batch(0).support.x.shape, (1, 5, 32, 32, 3))
      result = loop.train_and_evaluate(config, os.path.join(tmp, 'run'), show_progress=False)
      self.assertEqual(result.records[0]['num_tasks'], 4)
      # Under mock data the class names are '0'..'99', not CIFAR's: CIFAR-FS says so.
      with self.assertRaisesRegex(ValueError, "split='cifar_fs': tfds:cifar100 has no class"):
        build_run(config.replace(split=None), show_progress=False)

  def test_cifar_fs_and_fc100_class_splits(self):
    named = tfds_source.CIFAR_FS['val'] + tfds_source.CIFAR_FS['test']
    classes = named + [f'other{i}' for i in range(64)]
    split = tfds_source.class_split('cifar100', 'cifar_fs', classes, None, None)
    self.assertEqual([len(split[s]) for s in ('train', 'val', 'test')], [64, 16, 20])
    self.assertEqual([classes[i] for i in split['test']], tfds_source.CIFAR_FS['test'])
    supers = (tfds_source.FC100['val'] + tfds_source.FC100['test']
              + [f'super{i}' for i in range(12)]) * 5
    split = tfds_source.class_split('cifar100', 'fc100', [str(i) for i in range(100)], supers,
                                    None)
    self.assertEqual([len(split[s]) for s in ('train', 'val', 'test')], [60, 20, 20])
    with self.assertRaisesRegex(ValueError, r"dataset='tfds': name the tfds dataset"):
      Config(dataset='tfds', algorithm='protonet').validate()


if __name__ == '__main__':
  absltest.main()
