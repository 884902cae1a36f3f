"""The one image pipeline (metajax.data.images): numbers, reports, caches, and who uses it."""

import json
import os

from absl.testing import absltest, parameterized
import numpy as np
from PIL import Image

from metajax.data import class_images, folders, images, miniimagenet, omniglot, omniglot_download
from tests import helpers


def pillow_reference(image: Image.Image, mode: str, size: int, invert: bool = False):
  """The recipe every source followed before the pipeline: convert, (invert), resize (Lanczos)."""
  image = image.convert(mode)
  if invert:
    image = Image.fromarray(255 - np.asarray(image, np.uint8))
  if image.size != (size, size):
    image = image.resize((size, size), Image.LANCZOS)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def mixed_images(rng):
  """Pillow images of many modes and sizes."""
  rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  return [rgb(32, 32), rgb(10, 12).convert('RGBA'), rgb(28, 28).convert('P'),
          rgb(50, 33).convert('LA'), rgb(105, 105).convert('1'), rgb(28, 28).convert('L'),
          Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16))]


def write_tree(root, rng, per_class=3, classes=3, rgb_size=32):
  """Class folders: class0 holds RGB images of `rgb_size`, the others grayscale 28x28."""
  for c in range(classes):
    folder = os.path.join(root, f'class{c}')
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
      shape = (rgb_size, rgb_size, 3) if c == 0 else (28, 28)
      Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
          os.path.join(folder, f'{i}.png'))
  return root


class ConversionTest(parameterized.TestCase):

  @parameterized.parameters(('L', 28, False), ('RGB', 84, False), ('L', 16, True),
                            ('RGB', 28, True))
  def test_the_numbers_are_those_of_the_pillow_recipe(self, mode, size, invert):
    decoder = images.Decoder(images.Conversion(mode, size, invert))
    for image in mixed_images(np.random.default_rng(0)):
      np.testing.assert_array_equal(decoder(image), pillow_reference(image, mode, size, invert))
    self.assertLen(decoder, 7)

  def test_paths_bytes_and_arrays_decode_alike(self):
    tmp = self.create_tempdir().full_path
    array = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = os.path.join(tmp, 'a.png')
    Image.fromarray(array).save(path)
    decoder = images.Decoder(images.Conversion('L', 28))
    with open(path, 'rb') as f:
      raw = f.read()
    out = [decoder(path), decoder(raw), decoder(array), decoder(Image.fromarray(array))]
    for other in out[1:]:
      np.testing.assert_array_equal(out[0], other)
    self.assertEqual(out[0].shape, (28, 28, 1))
    provenance = decoder.provenance()
    self.assertEqual(provenance.modes, ('RGB',))
    np.testing.assert_array_equal(provenance.size, [[40, 30]] * 4)

  def test_omniglot_preprocess_is_the_pipeline_with_inversion(self):
    drawing = mixed_images(np.random.default_rng(2))[4]  # 105x105, 1-bit
    np.testing.assert_array_equal(omniglot_download.preprocess(drawing),
                                  pillow_reference(drawing, 'L', 28, invert=True)[..., 0])

  def test_describe_says_what_was_converted_and_resized_in_plain_words(self):
    decoder = images.Decoder(images.Conversion('L', 28))
    rng = np.random.default_rng(3)
    for _ in range(12):
      decoder(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    for _ in range(30):
      decoder(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    decoder(rng.integers(0, 256, (10, 12), dtype=np.uint8))
    lines = images.describe(decoder.provenance(), decoder.conversion)
    self.assertEqual(lines, ['12 RGB images converted to grayscale',
                             '30 images resized from 32x32 to 28x28',
                             '1 image resized from 12x10 to 28x28'])
    self.assertEqual(images.describe(decoder.provenance().take(np.arange(12, 42)),
                                     decoder.conversion),
                     ['30 images resized from 32x32 to 28x28'])
    inverted = images.Decoder(images.Conversion('L', 28, invert=True))
    inverted(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    self.assertEqual(images.describe(inverted.provenance(), inverted.conversion),
                     ['1 image inverted (dark on light made light on dark)'])

  def test_many_sizes_are_grouped(self):
    decoder = images.Decoder(images.Conversion('L', 8))
    for side in range(10, 20):
      decoder(np.zeros((side, side), np.uint8))
    lines = images.describe(decoder.provenance(), decoder.conversion)
    self.assertLen(lines, 5)
    self.assertEqual(lines[-1], '6 images of 6 other sizes resized to 8x8')


class CacheTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.cache = os.path.join(self.tmp, 'cache')
    self.enter_context(absltest.mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': self.cache}))

  def test_a_cache_of_another_version_or_fingerprint_is_never_read(self):
    path = images.cache_file('x', 'f' * 64)
    self.assertEqual(os.path.dirname(path), self.cache)  # $METAJAX_CACHE_DIR
    self.assertIn(f'_v{images.CACHE_VERSION}_', os.path.basename(path))
    images.write_cache(path, 'f' * 64, {'a': 1}, images=np.ones(3, np.uint8))
    arrays, meta = images.read_cache(path, 'f' * 64)
    np.testing.assert_array_equal(arrays['images'], np.ones(3))
    self.assertEqual(meta['a'], 1)
    self.assertIsNone(images.read_cache(path, 'e' * 64))
    with absltest.mock.patch.object(images, 'CACHE_VERSION', images.CACHE_VERSION + 1):
      self.assertIsNone(images.read_cache(path, 'f' * 64))
    np.savez(path, images=np.ones(3))  # a v1 cache: no version recorded
    self.assertIsNone(images.read_cache(path, 'f' * 64))
    with open(path, 'wb') as f:
      f.write(b'garbage')
    self.assertIsNone(images.read_cache(path, 'f' * 64))

  def test_folders_rebuild_a_stale_cache_in_its_place(self):
    data_dir = write_tree(os.path.join(self.tmp, 'data'), np.random.default_rng(0))
    first = folders.load(data_dir, show_progress=False)
    (name,) = os.listdir(self.cache)
    path = os.path.join(self.cache, name)
    # What version 1 wrote: the same arrays' names, other pixels, no version.
    np.savez(path, images=np.zeros_like(first.images), counts=first.counts,
             classes=json.dumps(first.classes), skipped='[]')
    again = folders.load(data_dir, show_progress=False)
    np.testing.assert_array_equal(again.images, first.images)
    with np.load(path) as f:
      self.assertEqual(json.loads(str(f['meta']))['version'], images.CACHE_VERSION)

  def test_the_report_survives_the_cache(self):
    data_dir = write_tree(os.path.join(self.tmp, 'data'), np.random.default_rng(0))
    first = folders.load(data_dir, channels=1, show_progress=False)
    with absltest.mock.patch.object(folders, '_decode', side_effect=AssertionError('decoded')):
      cached = folders.load(data_dir, channels=1, show_progress=False)
    for data in (first, cached):
      self.assertEqual(images.describe(data.provenance, data.conversion),
                       ['3 RGB images converted to grayscale',
                        '3 images resized from 32x32 to 28x28'])
      self.assertEqual(data.files[0], ['class0/0.png', 'class0/1.png', 'class0/2.png'])


class EverySourceUsesThePipelineTest(parameterized.TestCase):
  """Each image source decodes through `images.Conversion.apply`, with the same numbers."""

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.enter_context(absltest.mock.patch.dict(
        os.environ, {'METAJAX_CACHE_DIR': os.path.join(self.tmp, 'cache')}))
    self.calls = []
    apply = images.Conversion.apply

    def spy(conversion, image):
      self.calls.append((conversion.mode, conversion.size, conversion.invert))
      return apply(conversion, image)

    self.enter_context(absltest.mock.patch.object(images.Conversion, 'apply', spy))

  def test_folders(self):
    data_dir = write_tree(os.path.join(self.tmp, 'data'), np.random.default_rng(0))
    data = folders.load(data_dir, show_progress=False)
    self.assertEqual(set(self.calls), {('RGB', 84, False)})
    self.assertLen(self.calls, 9)
    with Image.open(os.path.join(data_dir, 'class1', '2.png')) as image:
      np.testing.assert_array_equal(data.images[5], pillow_reference(image, 'RGB', 84))

  def test_miniimagenet_files(self):
    data_dir = helpers.make_fixture(os.path.join(self.tmp, 'mini'), 'csv')
    _, data = miniimagenet.load('val', data_dir, show_progress=False)
    self.assertEqual(set(self.calls), {('RGB', 84, False)})
    self.assertLen(self.calls, data.shape[0] * data.shape[1])

  def test_prediction_inputs(self):
    class Settings:
      image_size, image_channels = 20, 1
    raw = np.random.default_rng(4).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    x = class_images.prepare_images(raw, Settings)
    self.assertEqual(set(self.calls), {('L', 20, False)})
    np.testing.assert_array_equal(
        x[0], pillow_reference(Image.fromarray(raw[0]), 'L', 20).astype(np.float32) / 255.0)
    self.calls.clear()
    omniglot.prepare_images(np.zeros((1, 105, 105), np.uint8))
    self.assertEqual(self.calls, [('L', 28, True)])


if __name__ == '__main__':
  absltest.main()
