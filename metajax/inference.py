"""A trained learner that classifies a user's own episodes from raw images.

    learner = metajax.load_learner('runs/protonet_5w1s')
    predicted = learner.predict(support_images, support_labels, query_images)

Images arrive as they are and are prepared exactly as the training data was,
by the dataset's own `prepare` (for Omniglot: any size, grayscale or RGB,
bool, uint8 or float; inverted if drawn dark on light; resized with
anti-aliasing to 28x28). Labels are any integers; predictions come back in
the same labels.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from metajax.learner import MetaLearner
from metajax.types import Params, Split


class TrainedLearner:
  """A meta-trained learner and its meta-parameters, ready for new episodes."""

  def __init__(self, config, learner: MetaLearner, theta: Params, step: int):
    self.config, self.learner, self.theta, self.step = config, learner, theta, step
    self._logits = jax.jit(lambda theta, support, query_x, num_steps: learner.predict(
        theta, support, query_x, jax.random.PRNGKey(0), num_steps), static_argnums=3)

  def prepare(self, images) -> np.ndarray:
    return self.config.data.prepare(images, self.config)

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
