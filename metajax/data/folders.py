"""Few-shot episodes from a researcher's own images: one folder per class.

`--dataset=folders --data_dir=DIR` reads every folder under DIR (at any depth)
that directly holds images as one class, named by its path relative to DIR
(so both `DIR/<class>/<image>` and `DIR/<group>/<class>/<image>` work). Any
format Pillow reads. Images are resized to `--image_size` squares (default
84, or 28 when every image is grayscale) with Lanczos filtering and kept
grayscale or RGB as found (`--image_channels` forces 1 or 3). The decoded
uint8 array is cached outside DIR, keyed by the files' names, sizes and
modification times, and written atomically; DIR is only read.

Classes are split into train / val / test by `DIR/splits.json`
(`{"train": [...], "val": [...], "test": [...]}`, lists of class names) when
it exists, else at random with `--split_fractions` (default 0.6, 0.2, 0.2),
from a fixed seed so that every run on DIR tests on the same classes.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image
import tqdm

from metajax import settings as settings_lib
from metajax.data import cache, episodes, registry
from metajax.data.source import EpisodeSpec
from metajax.settings import setting
from metajax.data.cache import default_cache_dir

SPLIT_FILE = 'splits.json'
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
SUBSETS = ('train', 'val', 'test')
GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
CACHE_VERSION = 1


def image_extensions() -> frozenset[str]:
  """File name endings of the formats Pillow reads ('.png', '.jpg', ...)."""
  return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                   if fmt in Image.OPEN)


class ClassImages(NamedTuple):
  """Every image of every class folder."""
  images: np.ndarray   # uint8 [total, size, size, channels], class by class
  counts: np.ndarray   # int [classes]: images of each class
  classes: list[str]   # class names: folder paths relative to the data folder
  skipped: list[str]   # unreadable files left out (skip_unreadable=True)

  @property
  def image_size(self) -> int:
    return self.images.shape[1]

  @property
  def channels(self) -> int:
    return self.images.shape[-1]


def scan(data_dir: str) -> dict[str, list[str]]:
  """{class name: sorted image paths relative to `data_dir`} of every folder holding images."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data_dir={data_dir} does not exist: point it at a folder of '
                            'class folders (data_dir/<class>/<image>)')
  extensions = image_extensions()
  found = {}
  for root, dirs, files in os.walk(data_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    images = sorted(f for f in files
                    if not f.startswith('.') and os.path.splitext(f)[1].lower() in extensions)
    if images and os.path.abspath(root) != os.path.abspath(data_dir):
      rel = os.path.relpath(root, data_dir).replace(os.sep, '/')
      found[rel] = [f'{rel}/{f}' for f in images]
  if len(found) < 2:
    raise ValueError(f'data_dir={data_dir} holds {len(found)} class folders of images; '
                     'few-shot episodes need class folders data_dir/<class>/<image> '
                     f'(formats: {", ".join(sorted(e[1:] for e in extensions)[:8])}, ...)')
  return found


def _fingerprint(data_dir: str, files: list[str], settings) -> str:
  digest = hashlib.sha256(repr(settings).encode())
  for name in files:
    stat = os.stat(os.path.join(data_dir, name))
    digest.update(f'{name}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()


def _decode(path: str, size: int, mode: str) -> np.ndarray:
  with Image.open(path) as image:
    image = image.convert(mode)
    if image.size != (size, size):
      image = image.resize((size, size), Image.LANCZOS)
    array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def _mode(path: str) -> Optional[str]:
  """The Pillow mode of an image file (read from its header), None if unreadable."""
  try:
    with Image.open(path) as image:
      return image.mode
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
    return None


def load(data_dir: str, image_size: Optional[int] = None, channels: Optional[int] = None,
         cache_dir: Optional[str] = None, skip_unreadable: bool = False,
         show_progress: bool = True) -> ClassImages:
  """Every class folder's images, decoded (or from the cache if the files are unchanged).

  Args:
    data_dir: the folder of class folders (only read).
    image_size: side of the square images (None: 84, or 28 if all are grayscale).
    channels: 1 or 3 (None: 1 if every image is grayscale, else 3).
    cache_dir: where the decoded array is cached (default: `default_cache_dir()`).
    skip_unreadable: leave out files Pillow cannot read instead of failing.
    show_progress: a progress bar while decoding.

  Raises:
    FileNotFoundError: `data_dir` does not exist.
    ValueError: fewer than 2 class folders, or an unreadable image (named).
  """
  found = scan(data_dir)
  files = [f for names in found.values() for f in names]
  settings = (CACHE_VERSION, image_size, channels, skip_unreadable)
  fingerprint = _fingerprint(data_dir, files, settings)
  name = os.path.basename(os.path.abspath(data_dir)) or 'root'
  path = os.path.join(cache_dir or default_cache_dir(), f'folders_{name}_{fingerprint[:16]}.npz')
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        return ClassImages(f['images'], f['counts'], json.loads(str(f['classes'])),
                           json.loads(str(f['skipped'])))
    except (OSError, ValueError, KeyError):
      pass  # an unreadable cache is rebuilt
  modes = {f: _mode(os.path.join(data_dir, f)) for f in files}
  bad = [f for f, m in modes.items() if m is None]
  if bad and not skip_unreadable:
    raise ValueError(f'{os.path.join(data_dir, bad[0])} is not a readable image '
                     f'({len(bad)} such files); fix or remove it, or pass '
                     'skip_unreadable=True to leave such files out')
  gray = all(m in GRAY_MODES for m in modes.values() if m is not None)
  channels = channels or (1 if gray else 3)
  if channels not in (1, 3):
    raise ValueError(f'image_channels={channels}: choose 1 (grayscale) or 3 (RGB)')
  size = image_size or (28 if channels == 1 else 84)
  images, counts, classes, skipped = [], [], [], list(bad)
  for cls, names in tqdm.tqdm(found.items(), desc=f'decoding {name}', disable=not show_progress,
                              mininterval=2):
    decoded = []
    for f in names:
      if modes[f] is None:
        continue
      try:
        decoded.append(_decode(os.path.join(data_dir, f), size, 'L' if channels == 1 else 'RGB'))
      except (OSError, SyntaxError, ValueError) as e:
        if not skip_unreadable:
          raise ValueError(f'{os.path.join(data_dir, f)} is not a readable image ({e}); fix '
                           'or remove it, or pass skip_unreadable=True to leave such files '
                           'out') from e
        skipped.append(f)
    if decoded:
      images += decoded
      counts.append(len(decoded))
      classes.append(cls)
  data = ClassImages(np.stack(images), np.asarray(counts), classes, skipped)
  cache.save_npz(path, images=data.images, counts=data.counts, classes=json.dumps(classes),
                 skipped=json.dumps(skipped))
  return data


def class_split(data_dir: Optional[str], classes: list[str],
                fractions: Optional[tuple[float, ...]]) -> dict[str, list[int]]:
  """{'train', 'val', 'test': indices into `classes`}: from splits.json, else seeded fractions."""
  path = os.path.join(data_dir or '', SPLIT_FILE)
  if data_dir is not None and os.path.isfile(path):
    if fractions is not None:
      raise ValueError(f'split_fractions={",".join(map(str, fractions))}: {path} sets the '
                       'class split; remove one of them')
    try:
      with open(path) as f:
        named = json.load(f)
      named = {s: list(named[s]) for s in SUBSETS}
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'{path} must be JSON {{"train": [...], "val": [...], "test": [...]}} '
                       f'of class folder names ({type(e).__name__}: {e})') from e
    index = {c: i for i, c in enumerate(classes)}
    seen = set()
    for subset, names in named.items():
      for n in names:
        if n not in index:
          raise ValueError(f'{path}: the {subset} class {n!r} is not a class folder of '
                           f'{data_dir} (classes are folder paths such as {classes[0]!r})')
        if n in seen:
          raise ValueError(f'{path}: class {n!r} is in more than one split')
        seen.add(n)
    return {s: [index[n] for n in names] for s, names in named.items()}
  return seeded_split(len(classes), fractions)


def seeded_split(num_classes: int, fractions: Optional[tuple[float, ...]]) -> dict[str, list[int]]:
  """Classes 0..num_classes-1 split at random (fixed seed) in proportions `fractions`."""
  fractions = DEFAULT_FRACTIONS if fractions is None else fractions
  order = np.random.RandomState(SPLIT_SEED).permutation(num_classes)
  ends = np.round(np.cumsum(fractions) / np.sum(fractions) * num_classes).astype(int)
  parts = np.split(order, ends[:-1])
  return {s: sorted(int(i) for i in part) for s, part in zip(SUBSETS, parts)}


def prepare_images(images, settings) -> np.ndarray:
  """Raw images (paths, PIL images or arrays of any size) -> float32 model inputs in [0, 1].

  As the training images were prepared: converted to `settings.image_channels`
  channels and resized to `settings.image_size` squares (Lanczos).
  """
  out = []
  for image in images:
    if isinstance(image, (str, os.PathLike)):
      with Image.open(image) as opened:
        image = opened.copy()
    elif not isinstance(image, Image.Image):
      array = np.asarray(image)
      if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
      image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    image = image.convert('L' if settings.image_channels == 1 else 'RGB')
    size = settings.image_size
    if image.size != (size, size):
      image = image.resize((size, size), Image.LANCZOS)
    array = np.asarray(image, np.float32) / 255.0
    out.append(array[..., None] if array.ndim == 2 else array)
  return np.stack(out)


def episode_source(spec: EpisodeSpec, data: ClassImages, subsets: dict[str, list[int]],
                   name: str):
  """The `EpisodeSource` of `data`'s classes, split into `subsets` (indices of classes)."""

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
      spec.batch_size, eval_images=2000)
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
      None, 'train,val,test shares of the classes when there is no named split (default: '
      '0.6,0.2,0.2, from a fixed seed)')

  def check(self) -> None:
    if self.split_fractions is not None and (
        len(self.split_fractions) != 3 or min(self.split_fractions) <= 0):
      settings_lib.fail('split_fractions', self.split_fractions,
                        'give three positive shares of the classes: train, val, test')


@dataclasses.dataclass(frozen=True)
class FoldersSettings(ImageSettings):
  data_dir: Optional[str] = setting(None, 'the folder of class folders (data_dir/<class>/<image>)')
  skip_unreadable: bool = setting(False, 'leave out files that Pillow cannot read (default: an '
                                  'error naming the first one)')


def make_source(settings: FoldersSettings, spec: EpisodeSpec, show_progress: bool = True):
  """Episodes of the class folders in `settings.data_dir`, split by class."""
  data = load(settings.data_dir, settings.image_size, settings.image_channels,
              skip_unreadable=settings.skip_unreadable, show_progress=show_progress)
  source = episode_source(spec, data,
                          class_split(settings.data_dir, data.classes, settings.split_fractions),
                          'folders')
  has_file = os.path.isfile(os.path.join(settings.data_dir, SPLIT_FILE))
  source.split_fractions = None if has_file else (settings.split_fractions or DEFAULT_FRACTIONS)
  return source


def _check(settings: FoldersSettings) -> None:
  if settings.data_dir is None:
    raise ValueError('--data_dir=None: --dataset=folders reads the class folders in --data_dir '
                     '(data_dir/<class>/<image>); set it')


def input_shape(settings: ImageSettings) -> tuple[int, int, int]:
  size = settings.image_size or (28 if settings.image_channels == 1 else 84)
  return (size, size, settings.image_channels or 3)


# Images of one's own: 5-way 1-shot with 15 queries per class, as on Omniglot.
IMAGE_DEFAULTS = {'ways': 5, 'shots': 1, 'query': 15, 'meta_batch_size': 8, 'num_steps': 2000,
                  'checkpoint_every': 250, 'log_every': 50}

SPEC = registry.register(registry.DatasetSpec(
    name='folders', task='classification', input_shape=input_shape, make_source=make_source,
    settings=FoldersSettings, defaults=IMAGE_DEFAULTS, check=_check, prepare=prepare_images,
    from_data={'image_size': 'image_size', 'image_channels': 'channels',
               'split_fractions': 'split_fractions'},
    with_argument=lambda folder: dataclasses.replace(
        SPEC, name=f'folders:{folder}', with_argument=None,
        defaults={**IMAGE_DEFAULTS, 'data_dir': os.path.abspath(os.path.expanduser(folder))})))
