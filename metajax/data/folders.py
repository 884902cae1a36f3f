"""Few-shot episodes from a researcher's own images: one folder per class.

`--dataset=folders --data_dir=DIR` reads every folder under DIR (at any depth)
that directly holds images as one class, named by its path relative to DIR
(so both `DIR/<class>/<image>` and `DIR/<group>/<class>/<image>` work). Any
format Pillow reads. Images go through `metajax.data.images`: resized to
`--image_size` squares (default 84, or 28 when every image is grayscale) with
Lanczos filtering and kept grayscale or RGB as found (`--image_channels`
forces 1 or 3). The decoded uint8 array is cached outside DIR, keyed by the
files' names, sizes and modification times, and written atomically; DIR is
only read. `source.summary()` says what was converted, resized and skipped,
and names class folders that hold no images.

Classes are split into train / val / test by `DIR/splits.json`
(`{"train": [...], "val": [...], "test": [...]}`, lists of class names, each
class in exactly one list) when it exists, else at random with
`--split_fractions` (default 0.6, 0.2, 0.2: 60%, 20% and 20% of the classes),
from a fixed seed so that every run on DIR tests on the same classes.
"""

import dataclasses
import functools
import hashlib
import json
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image
import tqdm

from metajax import settings as settings_lib
from metajax.data import catalog, episodes, images as images_lib, registry
from metajax.data.catalog import count, listing, percent
# The class split, also used (through this module) by tfds_source.
from metajax.data.class_split import (DEFAULT_FRACTIONS, SPLIT_FILE, class_split, seeded_note,
                                      seeded_split)
from metajax.data.source import EpisodeSpec
from metajax.settings import setting

SUBSETS = catalog.SPLITS
GRAY_MODES = images_lib.GRAY_MODES
image_extensions = images_lib.image_extensions


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


def _walk(data_dir: str) -> tuple[dict[str, list[str]], list[str]]:
  """({class: sorted image paths}, folders without subfolders or images), relative to data_dir."""
  extensions = image_extensions()
  found, empty = {}, []
  for root, dirs, files in os.walk(data_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    if os.path.abspath(root) == os.path.abspath(data_dir):
      continue
    images = sorted(f for f in files
                    if not f.startswith('.') and os.path.splitext(f)[1].lower() in extensions)
    rel = os.path.relpath(root, data_dir).replace(os.sep, '/')
    if images:
      found[rel] = [f'{rel}/{f}' for f in images]
    elif not dirs:
      empty.append(rel)
  return found, empty


def scan(data_dir: str) -> dict[str, list[str]]:
  """{class name: sorted image paths relative to `data_dir`} of every folder holding images."""
  return _scan(data_dir)[0]


def _scan(data_dir: str) -> tuple[dict[str, list[str]], list[str]]:
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data_dir={data_dir} does not exist: point it at a folder of '
                            'class folders (data_dir/<class>/<image>)')
  found, empty = _walk(data_dir)
  if len(found) < 2:
    extensions = image_extensions()
    also = (f' ({count(len(empty), "folder")} without images: {listing(empty)})'
            if empty else '')
    raise ValueError(f'data_dir={data_dir} holds {count(len(found), "class folder")} of '
                     f'images{also}; few-shot episodes need class folders '
                     'data_dir/<class>/<image> (formats: '
                     f'{", ".join(sorted(e[1:] for e in extensions)[:8])}, ...)')
  return found, empty


def _unreadable(data_dir: str, bad: dict[str, str]) -> ValueError:
  """The error for files Pillow cannot read (`bad`: file -> why)."""
  if len(bad) == 1:
    ((name, why),) = bad.items()
    return ValueError(f'{os.path.join(data_dir, name)} is not a readable image ({why}); fix or '
                      'remove it, or pass skip_unreadable=True to leave unreadable files out')
  return ValueError(f'{count(len(bad), "file")} in data_dir={data_dir} are not readable images: '
                    f'{listing([f"{n} ({why})" for n, why in bad.items()])}; fix or remove '
                    'them, or pass skip_unreadable=True to leave unreadable files out')


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
    ValueError: fewer than 2 class folders, or unreadable images (named).
  """
  found, empty = _scan(data_dir)
  files = [f for names in found.values() for f in names]
  fingerprint = images_lib.files_fingerprint(data_dir, files, image_size, channels,
                                             skip_unreadable)
  name = os.path.basename(os.path.abspath(data_dir)) or 'root'
  path = images_lib.cache_file(f'folders_{name}', fingerprint, cache_dir)
  cached = images_lib.read_cache(path, fingerprint)
  if cached is not None:
    arrays, meta = cached
    data = ClassImages(arrays['images'], arrays['counts'], meta['classes'], meta['skipped'],
                       meta['why_skipped'], meta['files'], (),
                       images_lib.Provenance.from_arrays(arrays),
                       images_lib.Conversion(**meta['conversion']))
  else:
    data = _decode(data_dir, found, image_size, channels, skip_unreadable,
                   show_progress and f'decoding {name}')
    images_lib.write_cache(
        path, fingerprint, {'classes': data.classes, 'skipped': data.skipped,
                            'why_skipped': list(data.why_skipped), 'files': data.files,
                            'conversion': dataclasses.asdict(data.conversion)},
        images=data.images, counts=data.counts, **data.provenance.to_arrays())
  kept = set(data.classes)
  return data._replace(empty=sorted(empty + [c for c in found if c not in kept]))


def _decode(data_dir: str, found: dict[str, list[str]], image_size: Optional[int],
            channels: Optional[int], skip_unreadable: bool, progress) -> ClassImages:
  files = [f for names in found.values() for f in names]
  headers = {f: images_lib.probe(os.path.join(data_dir, f)) for f in files}
  bad = {f: h for f, h in headers.items() if isinstance(h, str)}
  if bad and not skip_unreadable:
    raise _unreadable(data_dir, bad)
  gray = all(h[0] in GRAY_MODES for h in headers.values() if not isinstance(h, str))
  channels = channels or (1 if gray else 3)
  if channels not in (1, 3):
    raise ValueError(f'image_channels={channels}: choose 1 (grayscale) or 3 (RGB)')
  decoder = images_lib.Decoder(
      images_lib.Conversion.of(channels, image_size or (28 if channels == 1 else 84)))
  images, counts, classes, kept, skipped = [], [], [], [], dict(bad)
  for cls, names in tqdm.tqdm(found.items(), desc=progress or None, disable=not progress,
                              mininterval=2):
    decoded, read = [], []
    for f in names:
      if f in bad:
        continue
      try:
        decoded.append(decoder(os.path.join(data_dir, f)))
      except images_lib.UNREADABLE as e:
        if not skip_unreadable:
          raise _unreadable(data_dir, {f: images_lib.reason(e)}) from e
        skipped[f] = images_lib.reason(e)
        continue
      read.append(f)
    if decoded:
      images += decoded
      counts.append(len(decoded))
      classes.append(cls)
      kept.append(read)
  if not images:
    raise ValueError(f'data_dir={data_dir} holds no readable image')
  order = [f for f in files if f in skipped]
  return ClassImages(np.stack(images), np.asarray(counts), classes, order,
                     [skipped[f] for f in order], kept, (), decoder.provenance(),
                     decoder.conversion)


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


def loose_images(data_dir: str) -> list[str]:
  """Images directly in `data_dir`, in no class folder (left out)."""
  extensions = image_extensions()
  return sorted(f for f in os.listdir(data_dir) if not f.startswith('.')
                and os.path.splitext(f)[1].lower() in extensions
                and os.path.isfile(os.path.join(data_dir, f)))


def source_notes(data: ClassImages, split_note: str, loose: Sequence[str] = ()) -> list[str]:
  """Lines on the whole of `data`: its class split, folders without images, `loose` images."""
  notes = [split_note]
  if loose:
    notes.append(f'{count(len(loose), "image")} directly in the data folder, in no class '
                 f'folder, left out: {listing(loose)}')
  if data.empty:
    unread = {}
    for f in data.skipped:
      unread[os.path.dirname(f)] = unread.get(os.path.dirname(f), 0) + 1
    named = [f'{e} ({count(unread[e], "unreadable file")})' if e in unread else e
             for e in data.empty]
    notes.append(f'{count(len(data.empty), "class folder")} with no readable image, in no '
                 f'split: {listing(named)}')
  return notes


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


@dataclasses.dataclass(frozen=True)
class FoldersSettings(ImageSettings):
  data_dir: Optional[str] = setting(None, 'the folder of class folders (data_dir/<class>/<image>)')
  skip_unreadable: bool = setting(False, 'leave out files that Pillow cannot read (default: an '
                                  'error naming them)')


def make_source(settings: FoldersSettings, spec: EpisodeSpec, show_progress: bool = True):
  """Episodes of the class folders in `settings.data_dir`, split by class."""
  data_dir = settings.data_dir
  data = load(data_dir, settings.image_size, settings.image_channels,
              skip_unreadable=settings.skip_unreadable, show_progress=show_progress)
  has_file = os.path.isfile(os.path.join(data_dir, SPLIT_FILE))
  split_note = (f'classes split by {os.path.join(data_dir, SPLIT_FILE)}' if has_file
                else seeded_note(settings.split_fractions))
  source = episode_source(
      spec, data, class_split(data_dir, data.classes, settings.split_fractions, data.empty),
      'folders', title=f'folders:{data_dir}',
      notes=source_notes(data, split_note, loose_images(data_dir)),
      data_dir=data_dir)
  source.split_fractions = None if has_file else (settings.split_fractions or DEFAULT_FRACTIONS)
  return source


def _check(settings: FoldersSettings) -> None:
  if settings.data_dir is None:
    raise ValueError('--data_dir=None: --dataset=folders reads the class folders in --data_dir '
                     '(data_dir/<class>/<image>); set it')


def input_shape(settings: ImageSettings) -> tuple[int, int, int]:
  size = settings.image_size or (28 if settings.image_channels == 1 else 84)
  return (size, size, settings.image_channels or 3)


def _named(folder: str):
  """`make_source` of `--dataset=folders:FOLDER`, whose errors name that flag."""
  def make(settings: FoldersSettings, spec: EpisodeSpec, show_progress: bool = True):
    if not os.path.isdir(settings.data_dir):
      raise FileNotFoundError(f'dataset=folders:{folder}: {settings.data_dir} does not exist: '
                              'name a folder of class folders')
    return make_source(settings, spec, show_progress)
  return make


# Images of one's own: 5-way 1-shot with 15 queries per class, as on Omniglot.
IMAGE_DEFAULTS = {'ways': 5, 'shots': 1, 'query': 15, 'meta_batch_size': 8, 'num_steps': 2000,
                  'checkpoint_every': 250, 'log_every': 50}

SPEC = registry.register(registry.DatasetSpec(
    name='folders', task='classification', input_shape=input_shape, make_source=make_source,
    settings=FoldersSettings, defaults=IMAGE_DEFAULTS, check=_check, prepare=prepare_images,
    from_data={'image_size': 'image_size', 'image_channels': 'channels',
               'split_fractions': 'split_fractions'},
    with_argument=lambda folder: dataclasses.replace(
        SPEC, name=f'folders:{folder}', with_argument=None, make_source=_named(folder),
        defaults={**IMAGE_DEFAULTS, 'data_dir': os.path.abspath(os.path.expanduser(folder))})))
