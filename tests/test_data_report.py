"""Nothing silent in the data: each source's summary, class names and split fingerprints."""

import hashlib
import json
import os

from absl.testing import absltest, parameterized
import numpy as np
from PIL import Image

from metajax.data import DATASETS, catalog, registry as data_registry, source as source_lib
from metajax.data.source import EpisodeSpec
from tests import helpers


def write_folders(root, rgb_classes=2, gray_classes=8, per_class=6, rgb_size=32, seed=0):
  """Class folders: the first `rgb_classes` hold RGB images of `rgb_size`, the rest gray 28x28."""
  rng = np.random.default_rng(seed)
  for c in range(rgb_classes + gray_classes):
    folder = os.path.join(root, f'class{c}')
    os.makedirs(folder, exist_ok=True)
    shape = (rgb_size, rgb_size, 3) if c < rgb_classes else (28, 28)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
          os.path.join(folder, f'{i}.png'))
  return root


def expected_fingerprint(root, classes):
  """sha256 of the sorted 'path<TAB>size' lines of the files of `classes`."""
  entries = sorted((f'{c}/{f}', os.path.getsize(os.path.join(root, c, f)))
                   for c in classes for f in os.listdir(os.path.join(root, c)))
  return hashlib.sha256(''.join(f'{p}\t{s}\n' for p, s in entries).encode()).hexdigest()


class WordsTest(absltest.TestCase):

  def test_counts_listings_and_percentages(self):
    self.assertEqual(catalog.count(1, 'file'), '1 file')
    self.assertEqual(catalog.count(2, 'file'), '2 files')
    self.assertEqual(catalog.count(1, 'class'), '1 class')
    self.assertEqual(catalog.count(0, 'class'), '0 classes')
    self.assertEqual(catalog.listing([f'f{i}' for i in range(13)]),
                     'f0, f1, f2, f3, f4, f5, f6, f7, f8, f9 and 3 more')
    self.assertEqual(catalog.percent(0.6), '60%')
    self.assertEqual(catalog.percent(0.125), '12.5%')


class FoldersReportTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.enter_context(absltest.mock.patch.dict(
        os.environ, {'METAJAX_CACHE_DIR': os.path.join(self.tmp, 'cache')}))

  def source(self, data_dir, dataset='folders', **settings):
    episodes = EpisodeSpec(ways=2, train_ways=2, shots=1, query=2, eval_query=2, batch_size=2)
    if data_dir is not None:
      settings['data_dir'] = data_dir
    return data_registry.get(dataset).source(episodes, **settings)

  def test_summary_says_what_each_split_holds_and_what_was_converted(self):
    data_dir = write_folders(os.path.join(self.tmp, 'data'))
    with open(os.path.join(data_dir, 'splits.json'), 'w') as f:
      json.dump({'train': ['class0', 'class2', 'class3', 'class4', 'class5', 'class6'],
                 'val': ['class1', 'class7'], 'test': ['class8', 'class9']}, f)
    source = self.source(data_dir, image_channels=1)
    self.assertIsInstance(source, source_lib.DataSummary)
    self.assertIsInstance(source, source_lib.ClassSplits)
    lines = source.summary().splitlines()
    self.assertEqual(lines, [
        f'Data: folders:{data_dir}',
        '  train: 6 classes, 36 images, each example 28x28x1 after conversion',
        '    6 RGB images converted to grayscale',
        '    6 images resized from 32x32 to 28x28',
        '  val: 2 classes, 12 images, each example 28x28x1 after conversion',
        '    6 RGB images converted to grayscale',
        '    6 images resized from 32x32 to 28x28',
        '  test: 2 classes, 12 images, each example 28x28x1 after conversion',
        f'  classes split by {os.path.join(data_dir, "splits.json")}'])
    # The same from the cache.
    self.assertEqual(self.source(data_dir, image_channels=1).summary().splitlines(), lines)

  def test_seeded_split_in_percentages_skipped_files_and_empty_folders(self):
    data_dir = write_folders(os.path.join(self.tmp, 'data'), rgb_classes=0)
    for i in range(12):
      with open(os.path.join(data_dir, 'class3', f'broken{i:02d}.png'), 'wb') as f:
        f.write(b'not an image')
    os.makedirs(os.path.join(data_dir, 'nothing_here'))
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(data_dir, 'loose.png'))
    os.makedirs(os.path.join(data_dir, 'all_broken'))
    with open(os.path.join(data_dir, 'all_broken', 'x.png'), 'wb') as f:
      f.write(b'not an image')
    source = self.source(data_dir, skip_unreadable=True)
    summary = source.summary()
    self.assertIn('classes split at random (fixed seed): 60% train, 20% val, 20% test', summary)
    self.assertNotIn('0.6', summary)
    split = next(s for s in catalog.SPLITS if 'class3' in source.class_names(s))
    block = summary.split(f'  {split}: ')[1]
    self.assertIn('12 files skipped as unreadable: class3/broken00.png (cannot identify image '
                  'file), class3/broken01.png', block)
    self.assertIn('class3/broken09.png (cannot identify image file) and 2 more', block)
    self.assertNotIn('broken10', summary)
    self.assertIn('2 class folders with no readable image, in no split: all_broken '
                  '(1 unreadable file), nothing_here', summary)
    self.assertIn('1 image directly in the data folder, in no class folder, left out: '
                  'loose.png', summary)
    self.assertNotIn('converted', summary)  # gray 28x28 images: nothing to convert or resize

  def test_class_names_follow_the_samplers_and_fingerprints_the_files(self):
    data_dir = write_folders(os.path.join(self.tmp, 'data'))
    source = self.source(data_dir)
    names = {s: source.class_names(s) for s in catalog.SPLITS}
    self.assertEqual(sorted(sum(names.values(), [])), sorted(f'class{c}' for c in range(10)))
    self.assertEqual([len(names[s]) for s in catalog.SPLITS], [6, 2, 2])
    for split in catalog.SPLITS:
      classes = source.sampler(split).classes[:, 0]
      self.assertEqual(names[split], [f'class{c}' for c in classes])  # sampler order
      self.assertEqual(source.split_fingerprint(split),
                       expected_fingerprint(data_dir, names[split]))
    before = {s: source.split_fingerprint(s) for s in catalog.SPLITS}
    test_class = names['test'][0]
    with open(os.path.join(data_dir, test_class, 'extra.png'), 'wb') as f:
      Image.fromarray(np.zeros((28, 28), np.uint8)).save(f)
    after = self.source(data_dir)
    self.assertEqual(after.split_fingerprint('train'), before['train'])
    self.assertEqual(after.split_fingerprint('val'), before['val'])
    self.assertNotEqual(after.split_fingerprint('test'), before['test'])
    with self.assertRaisesRegex(ValueError, "split='eval': choose one of train, val, test"):
      source.class_names('eval')

  def test_a_mixed_source_reports_each_part(self):
    a = write_folders(os.path.join(self.tmp, 'a'), rgb_classes=0, gray_classes=5)
    b = write_folders(os.path.join(self.tmp, 'b'), rgb_classes=0, gray_classes=5, seed=1)
    source = self.source(None, dataset=f'folders:{a},folders:{b}')
    summary = source.summary().splitlines()
    self.assertEqual(summary[0], 'Data: 2 sources; each training episode from one of them, '
                     'drawn uniformly')
    self.assertIn(f'  folders:{a}', summary)
    self.assertEqual(source.class_names('train'),
                     [f'folders:{a}:{n}' for n in source.parts[f'folders:{a}'].class_names('train')]
                     + [f'folders:{b}:{n}' for n in
                        source.parts[f'folders:{b}'].class_names('train')])
    self.assertLen(source.split_fingerprint('test'), 64)


class MiniImageNetReportTest(parameterized.TestCase):

  @parameterized.parameters('csv', 'pickle')
  def test_class_ids_counts_and_fingerprints(self, layout):
    tmp = self.create_tempdir().full_path
    data_dir = helpers.make_fixture(os.path.join(tmp, 'mini'), layout)
    with absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': os.path.join(tmp, 'c')}):
      source = DATASETS['miniimagenet'].source(
          EpisodeSpec(ways=3, train_ways=3, shots=1, query=2, eval_query=2), data_dir=data_dir)
      lines = source.summary().splitlines()
    self.assertTrue(lines[0].startswith(f'Data: miniimagenet from {data_dir}'))
    for split, count in helpers.CLASSES.items():
      codes = [f'n{helpers.SUBSET_CODES[split]}{c:07d}' for c in range(count)]
      self.assertEqual(source.class_names(split), codes)
      self.assertIn(f'  {split}: {count} classes, {count * helpers.PER_CLASS} images, each '
                    'example 84x84x3 after conversion', lines)
      self.assertLen(source.split_fingerprint(split), 64)
    self.assertLen({source.split_fingerprint(s) for s in catalog.SPLITS}, 3)
    self.assertNotIn('converted', '\n'.join(lines))  # 84x84 RGB already


class TfdsReportTest(parameterized.TestCase):

  def test_label_names_and_conversions_under_mock_data(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    examples = {split: [{'image': rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                         'label': i % 100, 'coarse_label': i % 20} for i in range(n)]
                for split, n in (('train', 300), ('test', 100))}

    def as_data_source(self, split, *args, **kwargs):
      del self, args, kwargs
      return examples[split]

    tmp = self.create_tempdir().full_path
    with absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': tmp}), \
        tfds.testing.mock_data(as_data_source_fn=as_data_source):
      source = data_registry.get('tfds:cifar100').source(
          EpisodeSpec(ways=5, train_ways=5, shots=1, query=2, eval_query=2), split='random',
          image_size=28, image_channels=1)
    names = {s: source.class_names(s) for s in catalog.SPLITS}
    self.assertEqual(sorted(sum(names.values(), []), key=int), [str(i) for i in range(100)])
    self.assertEqual([len(names[s]) for s in catalog.SPLITS], [60, 20, 20])
    summary = source.summary()
    self.assertIn('  train: 60 classes, 240 images, each example 28x28x1 after conversion',
                  summary)
    self.assertIn('240 RGB images converted to grayscale', summary)
    self.assertIn('240 images resized from 32x32 to 28x28', summary)
    self.assertIn('60% train, 20% val, 20% test', summary)
    self.assertLen({source.split_fingerprint(s) for s in catalog.SPLITS}, 3)


if __name__ == '__main__':
  absltest.main()
