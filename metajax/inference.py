"""A trained learner that classifies a user's own episodes from raw images.

    learner = metajax.load_learner('runs/protonet_5w1s')
    predicted = learner.predict(support_images, support_labels, query_images)

Images arrive as they are: any size, grayscale ([n, H, W] or [n, H, W, 1]) or
RGB ([n, H, W, 3]), bool, uint8 (0..255) or float (0..1). They are prepared
exactly as the training data was: for Omniglot, grey levels, strokes bright on
a dark ground (images drawn dark on light, as in the official release, are
inverted), resized with anti-aliasing to 28x28. Labels are any integers;
predictions come back in the same labels.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metajax import train
from metajax.config import Config
from metajax.data import omniglot
from metajax.learner import MetaLearner
from metajax.types import Params, Split


def prepare_omniglot(images, size: int = 28) -> np.ndarray:
  """Raw drawings -> float32 [n, size, size, 1], strokes = 1, as in training."""
  images = np.asarray(images)
  if images.ndim == 4:
    images = images.mean(-1) if images.shape[-1] in (3, 4) else images[..., 0]
  if images.ndim != 3:
    raise ValueError(f'images must be [n, H, W] or [n, H, W, C], got shape {images.shape}')
  if images.dtype == bool:
    grey = images.astype(np.float32)
  elif np.issubdtype(images.dtype, np.integer):
    grey = images.astype(np.float32) / 255.0
  else:
    grey = images.astype(np.float32)
    if grey.max() > 1.0:
      grey = grey / 255.0
  out = np.empty((len(grey), size, size, 1), np.float32)
  for i, image in enumerate(grey):
    if image.mean() < 0.5:  # bright strokes on a dark ground: make it paper-white
      image = 1.0 - image
    paper = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    out[i, ..., 0] = omniglot.preprocess(paper, size).astype(np.float32) / 255.0
  return out


class TrainedLearner:
  """A meta-trained learner and its meta-parameters, ready for new episodes."""

  def __init__(self, config: Config, learner: MetaLearner, theta: Params, step: int):
    self.config, self.learner, self.theta, self.step = config, learner, theta, step
    self._logits = jax.jit(lambda theta, support, query_x, num_steps: learner.predict(
        theta, support, query_x, jax.random.PRNGKey(0), num_steps), static_argnums=3)

  def prepare(self, images) -> np.ndarray:
    if self.config.dataset == 'omniglot':
      return prepare_omniglot(images)
    return np.asarray(images, np.float32)

  def predict(self, support_images, support_labels, query_images,
              num_steps: Optional[int] = None) -> np.ndarray:
    """Labels (from `support_labels`) predicted for each query image.

    Args:
      support_images: raw images of the support set.
      support_labels: one integer label per support image, any values.
      query_images: raw images to classify.
      num_steps: inner steps of adaptation (default: as in training).
    """
    support_labels = np.asarray(support_labels)
    if support_labels.ndim != 1 or len(support_labels) != len(support_images):
      raise ValueError(f'support_labels must give one label per support image: '
                       f'{len(support_images)} images, labels of shape {support_labels.shape}')
    classes, y = np.unique(support_labels, return_inverse=True)
    if not self.learner.any_ways and len(classes) != self.config.num_ways:
      raise ValueError(f'this {self.config.algorithm} learner was trained for '
                       f'{self.config.num_ways}-way tasks; the support set has '
                       f'{len(classes)} classes')
    support = Split(jnp.asarray(self.prepare(support_images)), jnp.asarray(y, jnp.int32))
    logits = self._logits(self.theta, support, jnp.asarray(self.prepare(query_images)),
                          num_steps)
    return classes[np.asarray(jnp.argmax(logits[:, :len(classes)], -1))]


def load_learner(workdir: str, step: Optional[int] = None) -> TrainedLearner:
  """The trained learner of a run directory (its latest checkpoint by default)."""
  config, learner, state = train.load_run(workdir, step)
  return TrainedLearner(config, learner, state.theta, int(state.step))
