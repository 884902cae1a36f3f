"""TrainedLearner.predict on every form of images: paths, lists, folders, arrays."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from metajax.algorithms.protonet import protonet
from metajax.inference import TrainedLearner
from metajax.losses import cross_entropy
from metajax.models import Conv4
from metajax.types import Split, Task

WAYS, SHOTS, QUERY, SIZE = 3, 2, 2, 8


def _prepare(images, config):
  """uint8 [n, H, W] or [n, H, W, 1] -> float32 [n, H, W, 1] in [0, 1] (a stand-in)."""
  del config
  x = np.asarray(images, np.float32) / 255.0
  return x[..., None] if x.ndim == 3 else x


class _Data:
  prepare = staticmethod(_prepare)


class _Config:
  """What TrainedLearner reads of a run's config (the ways under both names in use)."""
  data, num_ways, ways, algorithm = _Data(), WAYS, WAYS, 'protonet'


def _images(count, seed):
  """Class c: a bright column at 2c and noise; `count` images of each class."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 60, (WAYS, count, SIZE, SIZE)).astype(np.uint8)
  for c in range(WAYS):
    images[c, :, :, 2 * c:2 * c + 2] = 255
  return images.reshape(WAYS * count, SIZE, SIZE)


def _save(images, folder):
  os.makedirs(folder)
  paths = [os.path.join(folder, f'{i:02d}.png') for i in range(len(images))]
  for image, path in zip(images, paths):
    Image.fromarray(image).save(path)
  return paths


@pytest.fixture(scope='module')
def trained():
  learner = protonet(Conv4(out=WAYS, channels=(4, 4)), cross_entropy)
  x = jnp.asarray(_prepare(_images(SHOTS, 0), None))
  y = jnp.repeat(jnp.arange(WAYS), SHOTS)
  theta = learner.init(jax.random.PRNGKey(0), Task(Split(x, y), Split(x, y)))
  return TrainedLearner(_Config(), learner, theta, step=0)


@pytest.fixture
def episode(tmp_path):
  support, query = _images(SHOTS, 1), _images(QUERY, 2)
  return {'support': support, 'query': query, 'labels': np.repeat([7, -1, 30], SHOTS),
          'support_paths': _save(support, str(tmp_path / 'support')),
          'query_paths': _save(query, str(tmp_path / 'query')),
          'support_dir': str(tmp_path / 'support'), 'query_dir': tmp_path / 'query',
          'tmp': tmp_path}


def test_paths_lists_folders_and_arrays_give_the_same_predictions(trained, episode):
  e = episode
  expected = trained.predict(e['support'], e['labels'], e['query'])
  assert expected.shape == (WAYS * QUERY,)
  np.testing.assert_array_equal(expected, np.repeat([7, -1, 30], QUERY))  # the columns tell
  forms = [
      (e['support_paths'], e['query_paths']),
      (tuple(map(pathlib.Path, e['support_paths'])), [pathlib.Path(p) for p in e['query_paths']]),
      (e['support_dir'], e['query_dir']),  # a str and a pathlib.Path folder
      ([e['support_dir']], np.array(e['query_paths'])),
      (list(e['support'][..., None]), [Image.open(p) for p in e['query_paths']]),
  ]
  for support, query in forms:
    np.testing.assert_array_equal(trained.predict(support, e['labels'], query), expected)


def test_one_image_is_one_image(trained, episode):
  e = episode
  path, image = e['query_paths'][3], e['query'][3]
  expected = trained.predict(e['support'], e['labels'], image)  # [H, W]
  assert expected.shape == (1,)
  for query in (path, pathlib.Path(path), [path], image[..., None], image[None], Image.open(path)):
    np.testing.assert_array_equal(trained.predict(e['support_dir'], e['labels'], query),
                                  expected)
  # One support image, one label: a one-class episode.
  np.testing.assert_array_equal(trained.predict(e['support_paths'][0], 7, e['query']), [7] * 6)


def test_non_finite_values_are_refused(trained, episode):
  e = episode
  support = e['support'].astype(np.float32)
  support[4, 1, 1] = np.nan
  with pytest.raises(ValueError, match=r'^support_images: image 4 holds non-finite values'):
    trained.predict(support, e['labels'], e['query'])
  query = list(e['query'].astype(np.float64))
  query[1][0, 0] = np.inf
  with pytest.raises(ValueError, match=r'^query_images: image 1 holds non-finite values'):
    trained.predict(e['support'], e['labels'], query)
  with pytest.raises(ValueError, match=r'^query_images: image 0 holds non-finite'):
    trained.predict(e['support'], e['labels'], np.full((SIZE, SIZE), np.nan))


def test_empty_sets_missing_and_unreadable_files_are_refused(trained, episode):
  e, tmp = episode, episode['tmp']
  with pytest.raises(ValueError, match=r'^support_images: no images \(the set is empty\)'):
    trained.predict([], [], e['query'])
  with pytest.raises(ValueError, match=r'^query_images: no images'):
    trained.predict(e['support'], e['labels'], np.zeros((0, SIZE, SIZE), np.uint8))
  os.makedirs(tmp / 'empty')
  (tmp / 'empty' / 'notes.txt').write_text('not an image')
  with pytest.raises(ValueError, match=r'^query_images: the folder .*empty holds no image'):
    trained.predict(e['support'], e['labels'], tmp / 'empty')
  with pytest.raises(ValueError, match=r'^support_images: no such file or folder: .*nowhere'):
    trained.predict([e['support_paths'][0], str(tmp / 'nowhere.png')], [1, 2], e['query'])
  (tmp / 'broken.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match=r'^query_images: cannot read .*broken.png as an image'):
    trained.predict(e['support'], e['labels'], str(tmp / 'broken.png'))
  with pytest.raises(ValueError, match=r'^query_images: expected one image'):
    trained.predict(e['support'], e['labels'], np.zeros(5))


def test_labels_must_match_the_support_set(trained, episode):
  e = episode
  with pytest.raises(ValueError, match='one label per support image: 6 images, labels of '
                     r'shape \(5,\)'):
    trained.predict(e['support_dir'], e['labels'][:5], e['query'])
  with pytest.raises(ValueError, match=r'one label per support image: 1 image, labels of '
                     r'shape \(2,\)'):
    trained.predict(e['support_paths'][0], [1, 2], e['query'])  # not 1 label per character
  fixed = TrainedLearner(trained.config, trained.learner._replace(any_ways=False),
                         trained.theta, step=0)
  with pytest.raises(ValueError, match=r'^support_labels: this protonet learner was trained '
                     'for 3-way tasks; the support set has 2 classes'):
    fixed.predict(e['support'][:4], e['labels'][:4], e['query'])
