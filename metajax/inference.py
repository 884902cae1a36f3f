"""A trained learner that classifies a user's own episodes from raw images.

    learner = metajax.load_learner('runs/protonet_5w1s')
    predicted = learner.predict('my_data/support', [0, 0, 1, 1, 2], 'my_data/query')

Images arrive as they are: files (one path, a list of paths, or a folder of
images) read with Pillow, or arrays. They are then prepared exactly as the
training data was, by the dataset's own `prepare` (for Omniglot: any size,
grayscale or RGB, bool, uint8 or float; inverted if drawn dark on light;
resized with anti-aliasing to 28x28). Labels are any integers; predictions
come back in the same labels.
"""

import os
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metajax.learner import MetaLearner
from metajax.types import Params, Split

# Channels of a single image [H, W, C]; a 3-d array with another last axis is
# a batch of grayscale images [n, H, W].
_CHANNELS = (1, 3, 4)
# Pillow modes read as 8-bit grayscale; every other mode is read as RGB.
_GRAY_MODES = ('1', 'L', 'LA', 'La')


class TrainedLearner:
  """A meta-trained learner and its meta-parameters, ready for new episodes."""

  def __init__(self, config, learner: MetaLearner, theta: Params, step: int):
    self.config, self.learner, self.theta, self.step = config, learner, theta, step
    self._logits = jax.jit(lambda theta, support, query_x, num_steps: learner.predict(
        theta, support, query_x, jax.random.PRNGKey(0), num_steps), static_argnums=3)

  def prepare(self, images) -> np.ndarray:
    """Raw images (in any form `predict` takes) -> model inputs, as in training."""
    return self._prepare(_read(images, 'images'), 'images')

  def _prepare(self, images, name: str) -> np.ndarray:
    try:
      return self.config.data.prepare(images, self.config)
    except ValueError as e:
      raise ValueError(f'{name}: {e}') from e

  def predict(self, support_images, support_labels, query_images,
              num_steps: Optional[int] = None) -> np.ndarray:
    """Labels (from `support_labels`) predicted for each query image, in its order.

    The argmax of `logits` (which describes the arguments and the errors).
    """
    classes, logits = self.logits(support_images, support_labels, query_images, num_steps)
    return classes[np.argmax(logits, -1)]

  def logits(self, support_images, support_labels, query_images,
             num_steps: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The classes of the support set and the learner's scores of each query for each.

    Each images argument is one of: a path (str or os.PathLike) of an image
    file, or of a folder whose image files (sorted by name) are the set; a
    list of paths (files or folders); an array holding one image ([H, W] or
    [H, W, C] with C in 1, 3, 4) or a batch of them ([n, H, W] or
    [n, H, W, C]); a list of images (arrays or PIL images).

    Args:
      support_images: raw images of the support set.
      support_labels: one integer label per support image, any values.
      query_images: raw images to classify.
      num_steps: inner steps of adaptation (default: as in training).

    Returns:
      (classes, logits): the distinct `support_labels`, sorted, and float
      logits [number of query images, len(classes)], column j the score of
      `classes[j]` (softmax gives the learner's probabilities).

    Raises:
      ValueError: naming the argument, for an empty set, a path that does
        not exist, a folder without images, a file Pillow cannot read,
        NaN or inf in an image, or labels that do not match the support set.
    """
    support = _read(support_images, 'support_images')
    query = _read(query_images, 'query_images')
    labels = np.asarray(support_labels)
    if labels.ndim == 0:  # one label for one support image
      labels = labels[None]
    if labels.ndim != 1 or len(labels) != len(support):
      raise ValueError(f'support_labels must give one label per support image: '
                       f'{len(support)} image{"s" * (len(support) != 1)}, labels of shape '
                       f'{labels.shape}')
    classes, y = np.unique(labels, return_inverse=True)
    if not self.learner.any_ways and len(classes) != self.config.ways:
      raise ValueError(f'support_labels: this {self.config.algorithm} learner was trained '
                       f'for {self.config.ways}-way tasks; the support set has '
                       f'{len(classes)} class{"es" * (len(classes) != 1)}')
    support = Split(jnp.asarray(self._prepare(support, 'support_images')),
                    jnp.asarray(y, jnp.int32))
    logits = self._logits(self.theta, support,
                          jnp.asarray(self._prepare(query, 'query_images')), num_steps)
    return classes, np.asarray(logits[:, :len(classes)])


def _read(images, name: str) -> Union[np.ndarray, list]:
  """`images` (any form `TrainedLearner.predict` takes) as an array [n, ...].

  Files are read, a single image gets a batch axis, and the set is checked
  (not empty, finite). Where the images' sizes differ, a list of arrays: the
  dataset's `prepare` decides whether it resizes them. `name`: the argument,
  for errors.
  """
  if isinstance(images, np.ndarray) and images.dtype.kind in 'US':  # paths
    images = images.tolist()
  if isinstance(images, (str, os.PathLike, Image.Image)):
    images = [images]
  if isinstance(images, (list, tuple)):
    out = []
    for image in images:
      if isinstance(image, (str, os.PathLike)):
        out += [_load(path, name) for path in _files(image, name)]
      elif isinstance(image, Image.Image):
        out.append(_pixels(image))
      else:
        out.append(np.asarray(image))
    if out and all(image.shape == out[0].shape for image in out):
      out = np.stack(out)
  else:
    out = np.asarray(images)
    if out.ndim == 2 or (out.ndim == 3 and out.shape[-1] in _CHANNELS):
      out = out[None]  # one image
  if (len(out) if isinstance(out, list) or out.ndim else 1) == 0:
    raise ValueError(f'{name}: no images (the set is empty)')
  if not isinstance(out, list) and out.ndim < 3:
    raise ValueError(f'{name}: expected one image [H, W] or [H, W, C] or a batch of them, '
                     f'got shape {out.shape}')
  for i, image in enumerate(out):
    if image.dtype.kind in 'fc' and not np.isfinite(image).all():
      raise ValueError(f'{name}: image {i} holds non-finite values (NaN or inf)')
  return out


def _files(path, name: str) -> list[str]:
  """The image file `path`, or the image files in the folder `path` sorted by name."""
  path = os.fspath(path)
  if os.path.isdir(path):
    extensions = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                           if fmt in Image.OPEN)
    files = [os.path.join(path, f) for f in sorted(os.listdir(path))
             if not f.startswith('.') and os.path.splitext(f)[1].lower() in extensions
             and os.path.isfile(os.path.join(path, f))]
    if not files:
      raise ValueError(f'{name}: the folder {path} holds no image files')
    return files
  if not os.path.exists(path):
    raise ValueError(f'{name}: no such file or folder: {path}')
  return [path]


def _load(path: str, name: str) -> np.ndarray:
  """The image file `path` as uint8 [H, W] (grayscale) or [H, W, 3] (any other mode)."""
  try:
    with Image.open(path) as image:
      return _pixels(image)
  except (OSError, Image.DecompressionBombError) as e:
    raise ValueError(f'{name}: cannot read {path} as an image ({e})') from e


def _pixels(image: Image.Image) -> np.ndarray:
  return np.asarray(image.convert('L' if image.mode in _GRAY_MODES else 'RGB'))
