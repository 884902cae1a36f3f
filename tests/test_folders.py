"""`--dataset=folders`: few-shot learning on a folder of class folders."""

import json
import os
import tempfile

from absl.testing import absltest, parameterized
import numpy as np
from PIL import Image
import pytest

from metajax import loop, rundir
from metajax.config import Config
from metajax.data import DATASETS, folders, registry as data_registry
from metajax.run import build_run
from tests import helpers


def write_classes(root, classes=4, per_class=6, rgb=False, seed=0):
  """Class folders of 12x10 images, each class its own brightness (or colour) plus noise."""
  rng = np.random.default_rng(seed)
  for c in range(classes):
    folder = os.path.join(root, f'class{c}')
    os.makedirs(folder, exist_ok=True)
    level = rng.integers(0, 256, size=3 if rgb else 1)
    for i in range(per_class):
      pixels = np.clip(level + rng.integers(-20, 21, size=(10, 12, 3 if rgb else 1)), 0, 255)
      pixels = pixels.astype(np.uint8)
      Image.fromarray(pixels if rgb else pixels[..., 0]).save(
          os.path.join(folder, f'{i}.{"jpg" if i % 2 else "png"}'))
  return root


class FolderSourceTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.cache = os.path.join(self.tmp, 'cache')
    self.enter_context(absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': self.cache}))

  def config(self, data_dir, **settings):
    values = dict(dataset='folders', data_dir=data_dir, algorithm='protonet', ways=2, shots=1,
                  query=2, meta_batch_size=2)
    values.update(settings)
    return Config(**values)

  def test_images_kept_as_found_resized_and_cached_outside_the_data(self):
    gray = write_classes(os.path.join(self.tmp, 'gray'))
    rgb = write_classes(os.path.join(self.tmp, 'rgb'), rgb=True)
    before = sorted(os.listdir(gray))
    data = folders.load(gray, show_progress=False)
    self.assertEqual(data.images.shape, (24, 28, 28, 1))
    self.assertEqual(data.classes, ['class0', 'class1', 'class2', 'class3'])
    self.assertEqual(folders.load(rgb, show_progress=False).images.shape, (24, 84, 84, 3))
    forced = folders.load(rgb, image_size=16, channels=1, show_progress=False)
    self.assertEqual(forced.images.shape, (24, 16, 16, 1))
    self.assertEqual(sorted(os.listdir(gray)), before)  # nothing written into the data
    self.assertLen([f for f in os.listdir(self.cache) if f.startswith('folders_gray')], 1)
    os.utime(os.path.join(gray, 'class0', '0.png'), (1, 1))  # a changed file: a new cache
    folders.load(gray, show_progress=False)
    self.assertLen([f for f in os.listdir(self.cache) if f.startswith('folders_gray')], 2)

  def test_a_run_records_what_it_found_and_its_seeded_class_split(self):
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=10)
    run = build_run(self.config(data_dir), show_progress=False)
    self.assertEqual((run.config.image_size, run.config.image_channels), (28, 1))
    self.assertEqual(run.config.split_fractions, (0.6, 0.2, 0.2))
    task = run.source.train_batch(0)
    self.assertEqual(task.support.x.shape, (2, 2, 28, 28, 1))
    again = build_run(self.config(data_dir, seed=5), show_progress=False)
    np.testing.assert_array_equal(run.source.sampler('test').classes,
                                  again.source.sampler('test').classes)
    self.assertLen(run.source.sampler('train').classes, 6)

  def test_splits_json_sets_the_class_split_and_is_checked(self):
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=6)
    with open(os.path.join(data_dir, 'splits.json'), 'w') as f:
      json.dump({'train': ['class0', 'class1', 'class2'], 'val': ['class3', 'class4'],
                 'test': ['class5', 'class4']}, f)
    with self.assertRaisesRegex(ValueError, r"splits.json names 1 class more than once: "
                                r"'class4' \(val, test\)"):
      build_run(self.config(data_dir), show_progress=False)
    with open(os.path.join(data_dir, 'splits.json'), 'w') as f:
      json.dump({'train': ['class0', 'class1', 'class2'], 'val': ['class3'],
                 'test': ['class4', 'class5']}, f)
    run = build_run(self.config(data_dir), show_progress=False)
    self.assertIsNone(run.config.split_fractions)
    self.assertEqual(run.source.sampler('test').classes[:, 0].tolist(), [4, 5])
    with self.assertRaisesRegex(ValueError, 'ways=2: the folders val split has only 1 class$'):
      run.source.sampler('val')

  def test_bad_folders_are_errors_naming_what_is_wrong(self):
    missing = os.path.join(self.tmp, 'no_such_folder')
    with self.assertRaisesRegex(FileNotFoundError, f'data_dir={missing} does not exist'):
      build_run(self.config(missing), show_progress=False)
    self.assertFalse(os.path.exists(missing))  # nothing created for a mistyped path
    with self.assertRaisesRegex(FileNotFoundError, f'^dataset=folders:{missing}: {missing} does '
                                'not exist'):  # the flag the user gave
      data_registry.get(f'folders:{missing}').source()
    self.assertFalse(os.path.exists(missing))
    empty = os.path.join(self.tmp, 'empty')
    os.makedirs(empty)
    with self.assertRaisesRegex(ValueError, 'holds 0 class folders of images'):
      folders.load(empty, show_progress=False)
    with self.assertRaisesRegex(ValueError, r'--data_dir=None: --dataset=folders reads'):
      self.config(None).validate()
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=6, per_class=4)
    with open(os.path.join(data_dir, 'splits.json'), 'w') as f:
      json.dump({'train': ['class0', 'class1', 'class2', 'class3'], 'val': ['class4'],
                 'test': ['class5']}, f)
    os.remove(os.path.join(data_dir, 'class3', '0.png'))
    with self.assertRaisesRegex(ValueError, "shots=2 plus query=2 is 4 images per class, but "
                                "class 'class3' of the folders train split has only 3"):
      build_run(self.config(data_dir, shots=2, query=2), show_progress=False)
    with open(os.path.join(data_dir, 'class1', 'broken.png'), 'wb') as f:
      f.write(b'not an image')
    with self.assertRaisesRegex(ValueError, r'class1/broken.png is not a readable image '
                                r'\(cannot identify image file\); fix or remove it, or pass '
                                'skip_unreadable=True'):
      folders.load(data_dir, show_progress=False)
    data = folders.load(data_dir, skip_unreadable=True, show_progress=False)
    self.assertEqual(data.skipped, ['class1/broken.png'])
    self.assertEqual(data.counts.tolist(), [4, 4, 4, 3, 4, 4])
    with self.assertRaisesRegex(ValueError, r'--image_channels=3: --dataset=omniglot does not '
                                r'use'):
      DATASETS['omniglot'].section(image_channels=3)


  def write_split(self, data_dir, split):
    with open(os.path.join(data_dir, 'splits.json'), 'w') as f:
      json.dump(split, f)

  def test_splits_json_must_name_every_class_once_and_nothing_else(self):
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=6)
    path = os.path.join(data_dir, 'splits.json')
    self.write_split(data_dir, {'train': ['class0', 'class1'], 'val': ['class2'],
                                'test': ['class3']})
    with self.assertRaisesRegex(ValueError, f"^{path} leaves out 2 classes of {data_dir}: "
                                "'class4', 'class5'; put each class in train, val or test$"):
      build_run(self.config(data_dir), show_progress=False)
    self.write_split(data_dir, {'train': ['class0', 'class1', 'class1', 'class2'],
                                'val': ['class3', 'class4'], 'test': ['class5', 'class4']})
    with self.assertRaisesRegex(ValueError, f"^{path} names 2 classes more than once: "
                                r"'class1' \(train, train\), 'class4' \(val, test\)$"):
      build_run(self.config(data_dir), show_progress=False)
    self.write_split(data_dir, {'train': ['class0', 'class1', 'class2', 'Class3'],
                                'val': ['class4', 'cls9'], 'test': ['class5']})
    with self.assertRaisesRegex(
        ValueError, f"^{path} names 2 classes that are not class folders of {data_dir}: "
        r"'Class3', 'cls9' \(classes are folder paths relative to it, such as 'class0'\); "
        f"it leaves out 1 class of {data_dir}: 'class3'"):
      build_run(self.config(data_dir), show_progress=False)
    os.makedirs(os.path.join(data_dir, 'hollow'))
    self.write_split(data_dir, {'train': ['class0', 'class1', 'class2', 'class3'],
                                'val': ['class4', 'hollow'], 'test': ['class5']})
    with self.assertRaisesRegex(ValueError, "names 1 class folder holding no readable image: "
                                "'hollow'"):
      build_run(self.config(data_dir), show_progress=False)

  @parameterized.parameters(((0.5, 0.5, 0.2), '1.2 \\(120% of the classes\\)'),
                            ((0.6, 0.2, 0.1), '0.9 \\(90% of the classes\\)'))
  def test_split_fractions_must_sum_to_one(self, fractions, total):
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=10)
    message = (f'split_fractions={",".join(map(str, fractions))}: the shares sum to {total}; '
               'give train, val and test shares that sum to 1')
    with self.assertRaisesRegex(ValueError, message):
      folders.FoldersSettings(data_dir=data_dir, split_fractions=fractions).validate()
    with self.assertRaisesRegex(ValueError, message):
      build_run(self.config(data_dir, split_fractions=fractions), show_progress=False)
    folders.FoldersSettings(split_fractions=(0.7, 0.2, 0.1)).validate()  # 0.9999999999999999

  def test_unreadable_files_are_counted_in_words(self):
    data_dir = write_classes(os.path.join(self.tmp, 'data'), classes=3)
    for name in ('class0/a.png', 'class2/b.png'):
      with open(os.path.join(data_dir, name), 'wb') as f:
        f.write(b'not an image')
    with self.assertRaisesRegex(ValueError, f'^2 files in data_dir={data_dir} are not readable '
                                r'images: class0/a.png \(cannot identify image file\), '
                                r'class2/b.png \(cannot identify image file\); fix or remove '
                                'them, or pass skip_unreadable=True'):
      folders.load(data_dir, show_progress=False)
    data = folders.load(data_dir, skip_unreadable=True, show_progress=False)
    self.assertEqual(data.skipped, ['class0/a.png', 'class2/b.png'])
    self.assertEqual(list(data.why_skipped), ['cannot identify image file'] * 2)
    single = os.path.join(self.tmp, 'single')
    os.makedirs(os.path.join(single, 'only'))
    with self.assertRaisesRegex(ValueError, f'^data_dir={single} holds 0 class folders of '
                                r'images \(1 folder without images: only\)'):
      folders.load(single, show_progress=False)


@pytest.mark.omniglot
class OmniglotFoldersTest(parameterized.TestCase):
  """The done-when of issue 14: real drawings in class folders, held-out classes."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.data_dir = helpers.omniglot_folders(os.path.join(cls.tmp, 'omniglot_folders'))
    os.environ['METAJAX_CACHE_DIR'] = os.path.join(cls.tmp, 'cache')

  def train(self, name, **settings):
    values = dict(dataset='folders', data_dir=self.data_dir, algorithm=name, ways=5, shots=1,
                  query=5, eval_query=5, eval_tasks=200, log_every=50, checkpoint_every=1000)
    values.update(settings)
    return loop.train_and_evaluate(Config(**values), os.path.join(self.tmp, name),
                                   show_progress=False)

  @pytest.mark.slow
  @pytest.mark.long
  def test_maml_beats_chance_and_load_learner_classifies_raw_images(self):
    # ProtoNets on class folders: tests/test_docs.py (the "Your own data" commands);
    # MAML++ with every piece on trains, checkpoints and loads in tests/test_mamlpp.py.
    maml = self.train('maml', inner_lr=0.4, eval_inner_steps=(1,), meta_batch_size=4,
                      num_steps=150, eval_tasks=100)
    self.assertGreater(maml.records[0]['mean'], 0.5)  # chance 0.2
    # Raw 105x105 drawings of held-out classes, as files, through load_learner.
    learner = rundir.load_learner(maml.workdir)
    test_classes = maml.run.source.sampler('test').classes[:5, 0]
    data = folders.scan(self.data_dir)
    names = [sorted(data)[c] for c in test_classes]
    support = [os.path.join(self.data_dir, data[n][0]) for n in names]
    query = [os.path.join(self.data_dir, f) for n in names for f in data[n][1:6]]
    predicted = learner.predict(support, names, query)
    accuracy = np.mean(predicted == np.repeat(names, 5))
    self.assertGreater(accuracy, 0.5)


if __name__ == '__main__':
  absltest.main()
