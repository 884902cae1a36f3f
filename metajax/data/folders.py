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
import os
from typing import Optional, Sequence

import numpy as np
import tqdm

from metajax.data import images as images_lib, registry
from metajax.data.catalog import count, listing
from metajax.data.class_images import (IMAGE_DEFAULTS, ClassImages, ImageSettings,
                                       episode_source, input_shape, prepare_images)
from metajax.data.class_split import DEFAULT_FRACTIONS, SPLIT_FILE, class_split, seeded_note
from metajax.data.source import EpisodeSpec
from metajax.settings import setting

GRAY_MODES = images_lib.GRAY_MODES
image_extensions = images_lib.image_extensions


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


def _named(folder: str):
  """`make_source` of `--dataset=folders:FOLDER`, whose errors name that flag."""
  def make(settings: FoldersSettings, spec: EpisodeSpec, show_progress: bool = True):
    if not os.path.isdir(settings.data_dir):
      raise FileNotFoundError(f'dataset=folders:{folder}: {settings.data_dir} does not exist: '
                              'name a folder of class folders')
    return make_source(settings, spec, show_progress)
  return make


SPEC = registry.register(registry.DatasetSpec(
    name='folders', task='classification', input_shape=input_shape, make_source=make_source,
    settings=FoldersSettings, defaults=IMAGE_DEFAULTS, check=_check, prepare=prepare_images,
    from_data={'image_size': 'image_size', 'image_channels': 'channels',
               'split_fractions': 'split_fractions'},
    with_argument=lambda folder: dataclasses.replace(
        SPEC, name=f'folders:{folder}', with_argument=None, make_source=_named(folder),
        defaults={**IMAGE_DEFAULTS, 'data_dir': os.path.abspath(os.path.expanduser(folder))})))
