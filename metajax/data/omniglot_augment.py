"""Random transforms of Omniglot training images, and their composition.

`augment` shifts images by up to two pixels; `random_affine` (and `distort`,
its form for training batches) applies Koch et al. (2015)'s affine
distortions, which bend a drawing as another drawer's hand might without
changing its strokes' order or number. `training_transform` composes the ones
the Omniglot settings ask for; `experiments/lake.py` uses `random_affine` for
test-time augmentation.

References:
  Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image
  Recognition", ICML Deep Learning Workshop 2015.
"""

from typing import Callable, Optional

import numpy as np
from PIL import Image

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random shifts of up to 2 pixels (zero padding) of float images [..., H, W, C]."""
  shape = x.shape
  x = x.reshape((-1,) + shape[-3:])
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  dy, dx = rng.integers(0, 5, size=(2, len(x)))
  out = np.stack([p[a:a + shape[-3], b:b + shape[-2]] for p, a, b in zip(padded, dy, dx)])
  return out.reshape(shape)


def random_affine(images: np.ndarray, rng: np.random.Generator, fill: float,
                  rotation: float = 10.0, shear: float = 0.3, scale=(0.8, 1.2),
                  shift: float = 2.0 / 105) -> np.ndarray:
  """Random affine distortions of float images [n, H, W] (Koch et al. 2015's ranges).

  Each image is rotated by up to `rotation` degrees, sheared by up to `shear`
  on each axis, scaled by a factor in `scale` on each axis and shifted by up
  to `shift` of its side, about its centre, resampled bilinearly; pixels from
  outside the image are `fill` (1.0 for paper-white drawings).
  """
  out = np.empty(images.shape, np.float32)
  n, h, w = images.shape
  theta = np.deg2rad(rng.uniform(-rotation, rotation, n))
  rho = rng.uniform(-shear, shear, (n, 2))
  s = rng.uniform(scale[0], scale[1], (n, 2))
  t = rng.uniform(-shift, shift, (n, 2)) * np.array([w, h])
  centre = np.array([(w - 1) / 2, (h - 1) / 2])
  for i in range(n):
    c, si = np.cos(theta[i]), np.sin(theta[i])
    forward = (np.array([[c, -si], [si, c]]) @ np.array([[1, rho[i, 0]], [rho[i, 1], 1]])
               @ np.diag(s[i]))
    inverse = np.linalg.inv(forward)  # PIL maps each output pixel to its input position
    offset = centre - inverse @ (centre + t[i])
    image = Image.fromarray(np.asarray(images[i], np.float32), mode='F')
    out[i] = np.asarray(image.transform(
        (w, h), Image.Transform.AFFINE, (*inverse[0], offset[0], *inverse[1], offset[1]),
        resample=Image.Resampling.BILINEAR, fillcolor=fill))
  return out


def distort(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`random_affine` of float images [..., H, W, 1] with bright strokes on black."""
  flat = x.reshape((-1,) + x.shape[-3:-1])
  return random_affine(flat, rng, fill=0.0).reshape(x.shape)


def training_transform(distort_images: bool, shift_images: bool) -> Optional[Transform]:
  """Distortions, then shifts, as asked (None if neither): `x, rng -> x`."""
  steps = [f for f, on in ((distort, distort_images), (augment, shift_images)) if on]
  if not steps:
    return None

  def transform(x, rng):
    for step in steps:
      x = step(x, rng)
    return x
  return transform
