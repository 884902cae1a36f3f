"""Omniglot loading, caching, downloading, splits and episode sampling."""

import contextlib
import functools
import hashlib
import http.server
import json
import os
import threading

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from metajax.data import (cache as cache_lib, episodes, omniglot, omniglot_augment,
                          omniglot_download, omniglot_tfds, splits)
from metajax.data.source import EpisodeSpec
from tests import helpers

@pytest.mark.omniglot
class SourceTest(parameterized.TestCase):

  def test_zip_and_folder_give_identical_arrays(self):
    tmp = self.create_tempdir().full_path
    zips = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'zips'))
    folders = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'folders'), extract=True)
    a = omniglot.load(zips, cache_dir=os.path.join(tmp, 'c1'), show_progress=False)
    b = omniglot.load(folders, cache_dir=os.path.join(tmp, 'c2'), show_progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    self.assertEqual(a.characters, b.characters)
    self.assertEqual(a.images.dtype, np.uint8)
    self.assertEqual(a.images.shape[1:], (20, 28, 28))
    # Strokes are 1 (bright) on a dark background, anti-aliased to grey levels.
    self.assertLess(a.images.mean(), 64)
    self.assertGreater(len(np.unique(a.images)), 50)

  def test_zip_and_folder_give_the_same_class_names_and_split_fingerprints(self):
    from metajax.data import DATASETS  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    layouts = [helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'zips')),
               helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'folders'),
                                   extract=True)]
    lake = lambda chars: {'train': chars[:30], 'val': chars[30:40], 'test': chars[40:]}
    seen = []
    with absltest.mock.patch.object(splits, 'lake_characters', lake), \
        absltest.mock.patch.dict(os.environ, {cache_lib.ENV_CACHE_DIR: os.path.join(tmp, 'c')}):
      for data_dir in layouts:
        source = DATASETS['omniglot'].source(split='lake', data_dir=data_dir)
        seen.append([(source.class_names(s), source.split_fingerprint(s))
                     for s in splits.SUBSETS])
        data = omniglot.load(data_dir, show_progress=False)
        test = [c for c in data.characters[40:]]
        files = omniglot.character_files(data_dir)
        entries = sorted(e for c in test for e in files[c])
        self.assertEqual(seen[-1][2], (test, hashlib.sha256(''.join(
            f'{p}\t{s}\n' for p, s in entries).encode()).hexdigest()))
        self.assertTrue(all(p.startswith('images_') and p.endswith('.png') for p, _ in entries))
        self.assertIn('  val: 10 classes, 200 images, each example 28x28x1 after conversion',
                      source.summary().splitlines())
    self.assertEqual(seen[0], seen[1])

  def test_image_size_sizes_the_episodes_the_model_and_prepare(self):
    from metajax.data import DATASETS  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    data_dir = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'data'), alphabets=1)
    spec = DATASETS['omniglot']
    lake = lambda chars: {'train': chars[:10], 'val': chars[10:20], 'test': chars[20:]}
    with absltest.mock.patch.object(splits, 'lake_characters', lake), \
        absltest.mock.patch.dict(os.environ, {cache_lib.ENV_CACHE_DIR: os.path.join(tmp, 'c')}):
      source = spec.source(EpisodeSpec(ways=3, train_ways=3, query=2, eval_query=2),
                           split='lake', data_dir=data_dir, image_size=14)
      task = source.train_batch(0)
      self.assertEqual(task.support.x.shape, (1, 3, 14, 14, 1))
      self.assertIn('resized from 105x105 to 14x14', source.summary())
    settings = spec.section(image_size=14)
    self.assertEqual(spec.shape(settings), (14, 14, 1))
    self.assertEqual(spec.prepare(np.ones((2, 105, 105), np.uint8) * 255, settings).shape,
                     (2, 14, 14, 1))
    with self.assertRaisesRegex(ValueError, r'--image_size=4: must be >= 8'):
      spec.section(image_size=4)

  def test_cache_is_used_then_rebuilt_when_the_source_changes(self):
    tmp = self.create_tempdir().full_path
    data_dir = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'data'), alphabets=1)
    cache = os.path.join(tmp, 'cache')
    first = omniglot.load(data_dir, cache_dir=cache, show_progress=False)
    self.assertLen(os.listdir(cache), 1)
    self.assertTrue(os.listdir(cache)[0].startswith('omniglot_28px_v2_'))  # v1: another pipeline
    with absltest.mock.patch.object(omniglot, '_read_set', side_effect=AssertionError('rebuilt')):
      again = omniglot.load(data_dir, cache_dir=cache, show_progress=False)
    np.testing.assert_array_equal(first.images, again.images)
    helpers.make_subset(helpers.OMNIGLOT_DIR, data_dir, alphabets=2)  # the source changes
    changed = omniglot.load(data_dir, cache_dir=cache, show_progress=False)
    self.assertGreater(len(changed.characters), len(first.characters))
    self.assertNotEqual(changed.fingerprint, first.fingerprint)

  def test_the_cache_never_goes_into_the_data_folder(self):
    tmp = self.create_tempdir().full_path
    data_dir = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'data'), alphabets=1)
    before = sorted(os.listdir(data_dir))
    with absltest.mock.patch.dict(os.environ, {'HOME': os.path.join(tmp, 'home')}):
      os.environ.pop(cache_lib.ENV_CACHE_DIR, None)
      omniglot.load(data_dir, show_progress=False)
      self.assertLen(os.listdir(os.path.join(tmp, 'home', '.cache', 'metajax')), 1)
      os.environ[cache_lib.ENV_CACHE_DIR] = os.path.join(tmp, 'cache')
      omniglot.load(data_dir, show_progress=False)
      self.assertLen(os.listdir(os.path.join(tmp, 'cache')), 1)
    self.assertEqual(sorted(os.listdir(data_dir)), before)

  @parameterized.parameters('truncate', 'garble')
  def test_corrupt_archive_is_a_clear_error_and_builds_no_cache(self, how):
    tmp = self.create_tempdir().full_path
    data_dir = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'data'), alphabets=1)
    path = os.path.join(data_dir, 'images_background.zip')
    raw = open(path, 'rb').read()
    if how == 'truncate':
      raw = raw[:len(raw) // 2]
    else:
      middle = len(raw) // 3
      raw = raw[:middle] + bytes(4096) + raw[middle + 4096:]
    open(path, 'wb').write(raw)
    cache = os.path.join(tmp, 'cache')
    with self.assertRaisesRegex(ValueError, r'images_background.zip .*(truncated|corrupt)'):
      omniglot.load(data_dir, cache_dir=cache, show_progress=False)
    self.assertFalse(os.path.exists(cache) and os.listdir(cache))

  def test_download_from_a_local_server(self):
    tmp = self.create_tempdir().full_path
    served = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'served'), alphabets=1)
    target = os.path.join(tmp, 'downloaded')
    with _serving(served) as url:
      omniglot.download(target, url=url, show_progress=False)
    for archive in omniglot.ARCHIVES:
      self.assertEqual(_sha(os.path.join(target, archive)), _sha(os.path.join(served, archive)))
    self.assertEqual(sorted(os.listdir(target)), sorted(omniglot.ARCHIVES))


class OfflineTest(parameterized.TestCase):

  def test_missing_files_offline_name_the_files_and_folder(self):
    target = os.path.join(self.create_tempdir().full_path, 'nothing')
    with self.assertRaisesRegex(FileNotFoundError,
                                r'images_background.zip and images_evaluation.zip.*' + target):
      omniglot.download(target, url='http://127.0.0.1:9/', show_progress=False)
    self.assertFalse(os.path.exists(target))  # nothing is left behind

  def test_a_failed_download_to_the_default_folder_leaves_nothing(self):
    home = self.create_tempdir().full_path
    env = {'HOME': home, omniglot_download.ENV_URL: 'http://127.0.0.1:9/'}
    with absltest.mock.patch.dict(os.environ, env):
      os.environ.pop(omniglot.ENV_DATA_DIR, None)
      with self.assertRaisesRegex(FileNotFoundError, 'could not be downloaded'):
        omniglot.load(show_progress=False)
    self.assertEqual(os.listdir(home), [])  # no ~/.cache/metajax/omniglot left behind

  @pytest.mark.omniglot
  def test_a_run_downloads_into_the_default_folder_it_records(self):
    from metajax.config import Config  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    served = helpers.make_subset(helpers.OMNIGLOT_DIR, os.path.join(tmp, 'served'), alphabets=1)
    home = os.path.join(tmp, 'home')
    with _serving(served) as url, absltest.mock.patch.dict(
        os.environ, {'HOME': home, omniglot_download.ENV_URL: url}):
      os.environ.pop(omniglot.ENV_DATA_DIR, None)
      config = Config(dataset='omniglot')
      default = os.path.join(home, '.cache', 'metajax', 'omniglot')
      self.assertEqual(config.data_dir, default)  # what config.json records
      data = omniglot.load(config.data_dir, show_progress=False)  # as make_source calls it
    self.assertEqual(sorted(os.listdir(default)), sorted(omniglot.ARCHIVES))
    self.assertGreater(len(data.characters), 10)

  def test_a_folder_that_does_not_exist_is_an_error_and_is_not_created(self):
    typo = os.path.join(self.create_tempdir().full_path, 'omniglott')
    with self.assertRaisesRegex(FileNotFoundError, f'^data_dir={typo} does not exist'):
      omniglot.load(typo, show_progress=False)
    self.assertFalse(os.path.exists(typo))

  def test_missing_files_without_download(self):
    target = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, 'not in data_dir=' + target):
      omniglot.load(target, download_missing=False)


class SplitTest(absltest.TestCase):

  def test_vinyals_split_is_fixed_disjoint_and_complete(self):
    split = splits.vinyals_characters()
    self.assertEqual({k: len(v) for k, v in split.items()},
                     {'train': 1100, 'val': 100, 'test': 423})
    everything = split['train'] + split['val'] + split['test']
    self.assertLen(set(everything), 1623)
    self.assertEqual(sum(c.startswith('background/') for c in everything), 964)
    with open(splits.SPLIT_FILE) as f:
      self.assertEqual(json.load(f)['sha256'],
                       'd562358ef1be8d3f4a4ea15c72bebb6f70ac97ce3d46f9719778795dfb9b672e')

  def test_classes_are_rotated_characters(self):
    characters = sorted(splits.vinyals_characters()['train'] + splits.vinyals_characters()['val']
                        + splits.vinyals_characters()['test'])
    rotated = splits.classes(characters, 'vinyals', 'test', rotations=True)
    plain = splits.classes(characters, 'vinyals', 'test', rotations=False)
    self.assertEqual(rotated.shape, (423 * 4, 2))
    self.assertEqual(plain.shape, (423, 2))
    self.assertEqual(sorted(set(rotated[:, 1])), [0, 1, 2, 3])
    lake = {s: splits.classes(characters, 'lake', s, False) for s in splits.SUBSETS}
    self.assertEqual([len(lake[s]) for s in splits.SUBSETS], [779, 185, 659])
    alphabets = {s: {splits.alphabet(characters[c]) for c in lake[s][:, 0]} for s in splits.SUBSETS}
    self.assertLen(alphabets['val'], 5)  # whole alphabets held out, none shared with training
    self.assertFalse(alphabets['val'] & alphabets['train'])
    self.assertEqual((len(alphabets['train']), len(alphabets['test'])), (25, 20))
    self.assertTrue(all(a.startswith('background/') for a in alphabets['val']))


class SamplerTest(parameterized.TestCase):

  def sampler(self, ways=5, shots=2, query=3, rotations=True, seed=0):
    turns = np.arange(4) if rotations else np.zeros(1, int)
    classes = np.stack(np.meshgrid(np.arange(30), turns, indexing='ij'), -1).reshape(-1, 2)
    return episodes.EpisodeSampler(helpers.fake_images(), classes, ways, shots, query, seed)

  def identify(self, x):
    """(character, drawing, quarter turns) of each float image [n, 8, 8, 1]."""
    out = []
    for image in np.round(x[..., 0] * 255).astype(int):
      for turns in range(4):
        canonical = np.rot90(image, -turns)
        if canonical[7, 3:7].min() == 255 and canonical[5:, 6].min() == 255:
          out.append((canonical[0, 0], canonical[0, 1], turns))
          break
    return out

  def test_episode_structure(self):
    task = episodes.stack([self.sampler().episode(np.random.default_rng(i)) for i in range(20)])
    self.assertEqual(task.support.x.shape, (20, 10, 8, 8, 1))
    self.assertEqual(task.query.x.shape, (20, 15, 8, 8, 1))
    seen_rotation_mixes = 0
    for t in range(20):
      np.testing.assert_array_equal(np.bincount(task.support.y[t]), [2] * 5)
      np.testing.assert_array_equal(np.bincount(task.query.y[t]), [3] * 5)
      support = self.identify(task.support.x[t])
      query = self.identify(task.query.x[t])
      self.assertLen(support, 10)
      self.assertLen(query, 15)
      by_label = {}
      for (c, d, r), y in zip(support + query, np.concatenate([task.support.y[t], task.query.y[t]])):
        by_label.setdefault(int(y), set()).add((c, r))
      # Each label is one class: one character, one rotation (per class, not per task).
      self.assertTrue(all(len(v) == 1 for v in by_label.values()))
      self.assertLen({next(iter(v)) for v in by_label.values()}, 5)  # distinct classes
      seen_rotation_mixes += len({next(iter(v))[1] for v in by_label.values()}) > 1
      # No image is in both the support and the query set. (A drawing may recur
      # rotated: a rotated character is another class.)
      self.assertFalse(set(support) & set(query))
      self.assertLen(set(support) | set(query), 25)
    self.assertGreater(seen_rotation_mixes, 10)

  def test_labels_are_remapped_at_random(self):
    sampler = self.sampler(rotations=False)
    label_of_character = {}
    for i in range(50):
      task = sampler.episode(np.random.default_rng(i))
      for (c, _, _), y in zip(self.identify(task.support.x), task.support.y):
        label_of_character.setdefault(c, set()).add(int(y))
    self.assertTrue(any(len(v) > 1 for v in label_of_character.values()))

  def test_batches_are_deterministic_in_seed_and_step(self):
    a, b = self.sampler(seed=3), self.sampler(seed=3)
    np.testing.assert_array_equal(a.batch(7, 4).support.x, b.batch(7, 4).support.x)
    self.assertFalse(np.array_equal(a.batch(7, 4).support.x, a.batch(8, 4).support.x))
    self.assertFalse(np.array_equal(a.batch(7, 4).support.x, self.sampler(seed=4).batch(7, 4).support.x))

  def test_prefetch_yields_the_same_batches_in_order(self):
    sampler = self.sampler()
    fetched = list(episodes.prefetch(lambda i: sampler.batch(i, 2), 5, 12))
    self.assertLen(fetched, 7)
    for i, task in zip(range(5, 12), fetched):
      np.testing.assert_array_equal(task.query.x, sampler.batch(i, 2).query.x)

  def test_prefetch_reraises_errors(self):
    def make(i):
      if i == 3:
        raise RuntimeError('bad batch 3')
      return i
    with self.assertRaisesRegex(RuntimeError, 'bad batch 3'):
      list(episodes.prefetch(make, 0, 10))

  def grouped(self, ways=10, shots=1, query=2, **kwargs):
    """Characters 0-9 are group 0, 10-27 group 1, 28-29 group 2 (8 classes, too few)."""
    classes = np.stack(np.meshgrid(np.arange(30), np.arange(4), indexing='ij'), -1).reshape(-1, 2)
    groups = np.select([classes[:, 0] < 10, classes[:, 0] < 28], [0, 1], 2)
    return episodes.EpisodeSampler(helpers.fake_images(), classes, ways, shots, query, 0,
                                   groups=groups, **kwargs)

  def test_episodes_within_one_group(self):
    sampler = self.grouped()
    self.assertEqual(sampler.skipped_groups, [(2, 8)])
    seen = set()
    for i in range(40):
      task = sampler.episode(np.random.default_rng(i))
      characters = {c for c, _, _ in self.identify(np.concatenate([task.support.x,
                                                                   task.query.x]))}
      group = {0 if c < 10 else 1 if c < 28 else 2 for c in characters}
      self.assertLen(group, 1)
      seen |= group
      chosen = sampler.choose(np.random.default_rng(i))  # the episode's classes, in label order
      self.assertEqual([c for c, _, _ in self.identify(task.support.x)], list(chosen[:, 0]))
    self.assertEqual(seen, {0, 1})  # both large groups, never the small one

  def test_shared_drawings_are_one_drawer_for_every_class(self):
    sampler = self.grouped(shots=1, query=3, shared_drawings=True)
    plain = self.grouped(shots=1, query=3)
    mixed = 0
    for i in range(20):
      task = sampler.episode(np.random.default_rng(i))
      support = self.identify(task.support.x)
      query = self.identify(task.query.x)
      self.assertLen({d for _, d, _ in support}, 1)  # one drawing index for all 10 classes
      by_class = {}
      for c, d, r in query:
        by_class.setdefault((c, r), set()).add(d)
      self.assertLen({frozenset(v) for v in by_class.values()}, 1)  # the same 3 drawers
      self.assertNotIn(support[0][1], next(iter(by_class.values())))
      mixed += len({d for _, d, _ in self.identify(plain.episode(
          np.random.default_rng(i)).support.x)}) > 1
    self.assertGreater(mixed, 15)  # without the option, drawings differ between classes

  def test_groups_too_small_for_the_ways_are_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, r'ways=80: episodes within one group need a group '
                                r'of at least 80 classes; the largest group .* has 72'):
      self.grouped(ways=80)

  def test_training_transforms_compose_as_the_settings_ask(self):
    x = helpers.fake_images()[:2, :3, ..., None].astype(np.float32) / 255.0  # [2, 3, 8, 8, 1]
    transform = omniglot_augment.training_transform
    self.assertIsNone(transform(False, False))
    shifted = transform(False, True)(x, np.random.default_rng(5))
    np.testing.assert_array_equal(shifted, omniglot_augment.augment(x, np.random.default_rng(5)))
    distorted = transform(True, False)(x, np.random.default_rng(5))
    self.assertEqual(distorted.shape, x.shape)
    self.assertFalse(np.allclose(distorted, x))
    rng = np.random.default_rng(5)
    both = omniglot_augment.augment(omniglot_augment.distort(x, rng), rng)  # distortions first
    np.testing.assert_array_equal(transform(True, True)(x, np.random.default_rng(5)), both)


  @parameterized.parameters(
      (dict(within_alphabet=True), dict(episodes='variable'),
       r'--within_alphabet=True: takes fixed episodes'),
      (dict(paired_drawers=True), dict(episodes='variable'),
       r'--paired_drawers=True: takes fixed episodes'),
      (dict(paired_drawers=True, data_source='tfds'), {},
       r'--paired_drawers=True: needs the drawers, which tfds does not keep'),
  )
  def test_lakes_episode_options_refuse_what_they_cannot_do(self, settings, spec, message):
    with self.assertRaisesRegex(ValueError, message):  # before any data is read
      omniglot.make_source(omniglot.OmniglotSettings(data_dir='/nonexistent', **settings),
                           EpisodeSpec(**spec))

  @parameterized.parameters(
      (dict(ways=121), r'ways=121: the train split has only 120 classes'),
      (dict(shots=15, query=6), r'shots=15 plus query=6 is 21 images per class, but each class has only 20'),
  )
  def test_impossible_episodes_are_clear_errors(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self.sampler(**kwargs)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@contextlib.contextmanager
def _serving(folder):
  """The URL of a local HTTP server of `folder` (127.0.0.1), for as long as the block runs."""
  handler = functools.partial(_QuietHandler, directory=folder)
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}/'
  finally:
    server.shutdown()


def _sha(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


class TfdsTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_tfds_source_under_mock_data(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from metajax import loop  # pylint: disable=g-import-not-at-top
    from metajax.config import Config  # pylint: disable=g-import-not-at-top
    from metajax.data import DATASETS  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    # Background: 3 alphabets x 4 characters; evaluation: 2 x 3; 20 drawings each,
    # RGB 105x105, paper white, as tfds stores them.
    def examples(alphabets, characters):
      rows = []
      for a in alphabets:
        for c in range(characters):
          for _ in range(20):
            image = np.full((105, 105, 3), 255, np.uint8)
            y, x = rng.integers(10, 80, size=2)
            image[y:y + 20, x:x + 3 + 5 * c] = 0
            rows.append({'image': image, 'alphabet': a, 'alphabet_char_id': c,
                         'label': 100 * a + c})
      return [rows[i] for i in rng.permutation(len(rows))]
    splits_ = {'train': examples([0, 1, 2], 4), 'test': examples([3, 4], 3)}

    def as_data_source(self, split, *args, **kwargs):
      del self, args, kwargs
      return splits_[split]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
      data = omniglot_tfds.load_tfds(show_progress=False)
      self.assertEqual(data.images.shape, (18, 20, 28, 28))
      self.assertEqual(sum(c.startswith('background/') for c in data.characters), 12)
      self.assertTrue(all(c.endswith(('character01', 'character02', 'character03',
                                      'character04')) for c in data.characters))
      self.assertGreater(data.images.max(), 200)  # strokes bright, as from the zips
      self.assertLess(data.images.mean(), 60)
      # ProtoNets train 60-way on Omniglot by default; these 10 classes take 2.
      config = Config(dataset='omniglot', data_source='tfds', split='lake', algorithm='protonet',
                      ways=2, train_ways=2, shots=1, query=2, meta_batch_size=1, channels=4,
                      num_steps=3, log_every=1, checkpoint_every=3, eval_tasks=4)
      with absltest.mock.patch.object(
          splits, 'lake_characters',
          lambda chars: {'train': chars[:10], 'val': chars[10:12], 'test': chars[12:]}):
        result = loop.train_and_evaluate(config, self.create_tempdir().full_path,
                                         show_progress=False)
        self.assertEqual(result.records[0]['num_tasks'], 4)
        # What was read, in words; class names with rotations as the sampler numbers them.
        source = DATASETS['omniglot'].source(data_source='tfds', split='lake', rotations=True)
        summary = source.summary().splitlines()
        names = source.class_names('val')
      self.assertEqual(summary[:5], [
          'Data: omniglot from tfds in ~/tensorflow_datasets',
          '  train: 40 classes (10 characters, each at 4 rotations), 200 images, each example '
          '28x28x1 after conversion',
          '    200 RGB images converted to grayscale',
          '    200 images inverted (dark on light made light on dark)',
          '    200 images resized from 105x105 to 28x28'])
      self.assertEqual(names, [f'{c}/rot{r}' for c in data.characters[10:12]
                               for r in (0, 90, 180, 270)])
      self.assertLen({source.split_fingerprint(s) for s in splits.SUBSETS}, 3)
