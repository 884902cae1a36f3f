"""Labelled images as few-shot episodes: the layer under class folders and tfds.

`ClassImages` holds every image of every class, decoded to one uint8 array,
and how each was read; `episode_source` splits its classes into train / val /
test and samples episodes from them; `ImageSettings` declares the size, colour
and class split shared by the datasets read as found (`folders`, `tfds:NAME`);
`prepare_images` turns new raw images into model inputs as the training images
were prepared.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image

from metajax import settings as settings_lib
from metajax.data import catalog, episodes, images as images_lib, registry
from metajax.data.catalog import count, listing, percent
from metajax.data.source import EpisodeSpec
from metajax.settings import setting


class ClassImages(NamedTuple):
  """Every image of every class folder (or tfds class), and how it was read."""
  images: np.ndarray   # uint8 [total, size, size, channels], class by class
  counts: np.ndarray   # int [classes]: images of each class
  classes: list[str]   # class names: folder paths relative to the data folder
  skipped: list[str]   # unreadable files left out (skip_unreadable=True)
  why_skipped: Sequence[str] = ()  # why each skipped file is unreadable
  files: Optional[list[list[str]]] = None  # each class's files read (None: not from files)
  empty: Sequence[str] = ()  # class folders holding no readable image
  provenance: Optional[images_lib.Provenance] = None  # each image's mode and size as found
  conversion: Optional[images_lib.Conversion] = None  # what made them arrays

  @property
  def image_size(self) -> int:
    return self.images.shape[1]

  @property
  def channels(self) -> int:
    return self.images.shape[-1]

  def rows(self, classes: Sequence[int]) -> np.ndarray:
    """Indices into `images` of the images of `classes` (indices into `self.classes`)."""
    starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
    return np.concatenate([np.arange(starts[c], starts[c] + self.counts[c]) for c in classes]
                          + [np.zeros(0, np.int64)])


def prepare_images(images, settings) -> np.ndarray:
  """Raw images (paths, PIL images or arrays of any size) -> float32 model inputs in [0, 1].

  As the training images were prepared (`metajax.data.images.Conversion`):
  converted to `settings.image_channels` channels and resized to
  `settings.image_size` squares (Lanczos).
  """
  conversion = images_lib.Conversion.of(settings.image_channels, settings.image_size)
  out = []
  for image in images:
    if isinstance(image, (str, os.PathLike)):
      with Image.open(image) as opened:
        out.append(conversion.apply(opened))
      continue
    if not isinstance(image, Image.Image):
      array = np.asarray(image)
      if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
      image = images_lib.as_pil(array)
    out.append(conversion.apply(image))
  return np.stack(out).astype(np.float32) / 255.0


def split_info(data: ClassImages, subsets: dict[str, list[int]], data_dir: Optional[str],
               split: str) -> catalog.SplitInfo:
  """The classes, images, fingerprint and conversions of one split of `data`."""
  index = list(subsets[split])
  classes = [data.classes[i] for i in index]
  rows = data.rows(index)
  notes = []
  if data.provenance is not None:
    notes += images_lib.describe(data.provenance.take(rows), data.conversion)
  members = set(classes)
  skipped = [f'{f} ({why})' for f, why in zip(data.skipped, data.why_skipped)
             if os.path.dirname(f) in members]
  if skipped:
    notes.append(f'{count(len(skipped), "file")} skipped as unreadable: {listing(skipped)}')
  if data.files is not None:
    fingerprint = catalog.fingerprint(
        (f, os.path.getsize(os.path.join(data_dir, f))) for i in index for f in data.files[i])
  else:  # no files (tfds): the class names and pixels
    digest = hashlib.sha256(json.dumps(classes).encode())
    for i in index:
      digest.update(np.ascontiguousarray(data.images[data.rows([i])]).tobytes())
    fingerprint = digest.hexdigest()
  return catalog.SplitInfo(classes, len(rows), fingerprint, tuple(notes))


def episode_source(spec: EpisodeSpec, data: ClassImages, subsets: dict[str, list[int]],
                   name: str, title: Optional[str] = None, notes: Sequence[str] = (),
                   data_dir: Optional[str] = None):
  """The `EpisodeSource` of `data`'s classes, split into `subsets` (indices of classes).

  Args:
    spec: the episodes asked for.
    data: the classes and their images.
    subsets: {'train', 'val', 'test': indices into `data.classes`}.
    name: the source's name in error messages ('folders').
    title: the source in its summary (default: `name`).
    notes: lines on the whole source for its summary (`source_notes`).
    data_dir: the folder `data.files` are relative to.
  """

  def sampler(subset, seed):
    index = np.asarray(subsets[subset], np.int64)
    return episodes.make_sampler(spec, subset, data.images,
                                 np.stack([index, np.zeros_like(index)], -1), seed,
                                 name=f'{name} {subset}', counts=data.counts,
                                 class_names=data.classes)

  source = episodes.EpisodeSource(
      sampler('train', spec.seed),
      {split: functools.partial(sampler, split, seed)
       for split, seed in registry.EVAL_SEEDS.items()},
      spec.batch_size, eval_images=2000,
      catalog=catalog.Catalog(title or name, data.images.shape[1:],
                              functools.partial(split_info, data, subsets, data_dir), notes))
  source.image_size, source.channels = data.image_size, data.channels
  return source


@dataclasses.dataclass(frozen=True)
class ImageSettings(settings_lib.Section):
  """The size and colour of images read as found (class folders, tfds)."""
  image_size: Optional[int] = setting(None, 'side of the square images (default: as found: '
                                      '84, or 28 when every image is grayscale)', minimum=8)
  image_channels: Optional[int] = setting(None, '1 (grayscale) or 3 (RGB) (default: as found)',
                                          choices=(1, 3))
  split_fractions: Optional[tuple[float, ...]] = setting(
      None, 'train,val,test shares of the classes when there is no named split, summing to 1 '
      '(default: 0.6,0.2,0.2, from a fixed seed)')

  def check(self) -> None:
    fractions = self.split_fractions
    if fractions is None:
      return
    if len(fractions) != 3 or min(fractions) <= 0:
      settings_lib.fail('split_fractions', fractions,
                        'give three positive shares of the classes: train, val, test')
    total = sum(fractions)
    if abs(total - 1) > 1e-6:
      settings_lib.fail('split_fractions', fractions,
                        f'the shares sum to {total:g} ({percent(total)} of the classes); give '
                        'train, val and test shares that sum to 1, e.g. 0.6,0.2,0.2')


def input_shape(settings: ImageSettings) -> tuple[int, int, int]:
  size = settings.image_size or (28 if settings.image_channels == 1 else 84)
  return (size, size, settings.image_channels or 3)


# Images of one's own: 5-way 1-shot with 15 queries per class, as on Omniglot.
IMAGE_DEFAULTS = {'ways': 5, 'shots': 1, 'query': 15, 'meta_batch_size': 8, 'num_steps': 2000,
                  'checkpoint_every': 250, 'log_every': 50}
