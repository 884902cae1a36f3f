"""Omniglot (Lake et al. 2015) from the official release, as a compact uint8 array.

The official release is two zips, `images_background.zip` (964 characters) and
`images_evaluation.zip` (659), each holding
`images_<set>/<Alphabet>/characterNN/IIII_DD.png`: 105x105 1-bit drawings,
white paper = 1, stroke = 0. Either zip may also be present extracted, as the
folder `images_<set>/`. metajax loads all 1623 characters x 20 drawings,
inverts them (stroke = 1), resizes 105 -> 28 with anti-aliasing (Lanczos),
all through `metajax.data.images`, and keeps the result as uint8 in a cache
file that is rebuilt when the source files change. The cache is written to a
temporary file and renamed, so a failed build never leaves a half-built cache
behind. `source.summary()` says what was read and converted, split by split.

References:
  Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through
  probabilistic program induction", Science 2015.
"""

import dataclasses
import functools
import hashlib
import os
import zipfile
from typing import Optional

import numpy as np
from PIL import Image
import tqdm

from metajax import settings as settings_lib
from metajax.data import catalog, episodes, images as images_lib, omniglot_augment, registry, splits
from metajax.data.catalog import count
from metajax.data.source import EpisodeSpec
from metajax.settings import setting
from metajax.data.omniglot_download import (ARCHIVES, ENV_DATA_DIR, IMAGES_PER_CHARACTER, SETS,
                                            URL, Omniglot, conversion, download, preprocess)
from metajax.data.omniglot_tfds import load_tfds

CACHE_VERSION = images_lib.CACHE_VERSION  # 2: the one image pipeline (1: its own)


def default_data_dir() -> str:
  """`$METAJAX_OMNIGLOT_DIR`, else `~/.cache/metajax/omniglot`."""
  return os.environ.get(ENV_DATA_DIR) or os.path.join(
      os.path.expanduser('~'), '.cache', 'metajax', 'omniglot')


def _source(data_dir: str, image_set: str) -> Optional[str]:
  """The zip or the extracted folder of one set, or None."""
  folder = os.path.join(data_dir, f'images_{image_set}')
  archive = folder + '.zip'
  if os.path.isfile(archive):
    return archive
  if os.path.isdir(folder):
    return folder
  return None


def _fingerprint(paths: list[str]) -> str:
  """sha256 over the bytes of the zips, or over the file listing of folders."""
  digest = hashlib.sha256()
  for path in paths:
    digest.update(os.path.basename(path).encode())
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
          digest.update(chunk)
    else:
      for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
          full = os.path.join(root, name)
          stat = os.stat(full)
          digest.update(f'{os.path.relpath(full, path)}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()


def _entries(path: str) -> list[tuple[str, int]]:
  """(name, size in bytes) of the drawings in one zip or folder, names as in the zip."""
  if os.path.isfile(path):
    with zipfile.ZipFile(path) as archive:
      return [(i.filename, i.file_size) for i in archive.infolist()
              if i.filename.endswith('.png')]
  entries = []
  for root, _, files in os.walk(path):
    rel = os.path.relpath(root, os.path.dirname(path))
    entries += [(f'{rel}/{f}'.replace(os.sep, '/'), os.path.getsize(os.path.join(root, f)))
                for f in files if f.endswith('.png')]
  return entries


def character_files(data_dir: str) -> dict[str, list[tuple[str, int]]]:
  """{'<set>/<Alphabet>/characterNN': [(file name as in the zip, size in bytes)]}."""
  found: dict[str, list[tuple[str, int]]] = {}
  for image_set in SETS:
    for name, size in _entries(_source(data_dir, image_set)):
      parts = name.split('/')
      found.setdefault(f'{image_set}/{parts[1]}/{parts[2]}', []).append((name, size))
  return found


def _read_set(path: str, image_set: str, decoder: images_lib.Decoder, show_progress: bool):
  """(characters, images uint8 [n, 20, size, size]) of one zip or folder."""
  prefix = f'images_{image_set}/'
  if os.path.isfile(path):
    try:
      archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
      raise ValueError(f'{path} is not a valid zip archive ({e}): it is truncated '
                       'or corrupt; delete it and download it again') from e
    names = [n for n in archive.namelist() if n.endswith('.png')]
    read = archive.read
  else:
    archive = None
    names = [n for n, _ in _entries(path)]
    base = os.path.dirname(path)

    def read(name):
      with open(os.path.join(base, name), 'rb') as f:
        return f.read()

  by_character: dict[str, list[str]] = {}
  for name in names:
    parts = name.split('/')
    if len(parts) != 4 or parts[0] + '/' != prefix:
      raise ValueError(f'{path}: unexpected entry {name!r}; expected '
                       f'{prefix}<Alphabet>/characterNN/IIII_DD.png')
    by_character.setdefault(f'{image_set}/{parts[1]}/{parts[2]}', []).append(name)
  if not by_character:
    raise ValueError(f'{path} holds no Omniglot images')
  characters = sorted(by_character)
  size = decoder.conversion.size
  images = np.zeros((len(characters), IMAGES_PER_CHARACTER, size, size), np.uint8)
  try:
    for c, character in enumerate(tqdm.tqdm(characters, desc=f'omniglot {image_set}',
                                            disable=not show_progress, mininterval=2)):
      files = sorted(by_character[character])
      if len(files) != IMAGES_PER_CHARACTER:
        raise ValueError(f'{path}: {character} has {count(len(files), "drawing")}, expected '
                         f'{IMAGES_PER_CHARACTER}')
      for i, name in enumerate(files):
        images[c, i] = decoder(read(name))[..., 0]
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise ValueError(f'{path} is truncated or corrupt ({type(e).__name__}: {e}); '
                     'delete it and download it again') from e
  finally:
    if archive is not None:
      archive.close()
  return characters, images


def load(data_dir: Optional[str] = None, cache_dir: Optional[str] = None, size: int = 28,
         download_missing: bool = True, show_progress: bool = True) -> Omniglot:
  """All 1623 characters, from the cache if it matches the source files.

  Args:
    data_dir: folder with the official zips or their extracted folders; it
      must exist, unless it is `default_data_dir()` (the default), where
      missing zips are downloaded.
    cache_dir: where the uint8 cache lives (default: `default_cache_dir()`; the
      data folder is only read).
    size: side of the resized images.
    download_missing: fetch missing zips from the official repository.
    show_progress: progress bars for download and the first build.

  Raises:
    FileNotFoundError: the files are missing and cannot be downloaded.
    ValueError: a source file is truncated or corrupt.
  """
  default = default_data_dir()
  if (data_dir is not None and not os.path.isdir(data_dir)
      and os.path.abspath(data_dir) != os.path.abspath(default)):
    raise FileNotFoundError(f'data_dir={data_dir} does not exist: point it at the folder '
                            f'holding {" and ".join(ARCHIVES)}')
  data_dir = data_dir or default
  if any(_source(data_dir, s) is None for s in SETS):
    if not download_missing:
      raise FileNotFoundError(
          f'Omniglot is not in data_dir={data_dir}: put {" and ".join(ARCHIVES)} '
          f'(from {URL}), or the folders they extract to, there.')
    download(data_dir, show_progress=show_progress)
  sources = [_source(data_dir, s) for s in SETS]
  fingerprint = _fingerprint(sources)
  cache = images_lib.cache_file(f'omniglot_{size}px', fingerprint, cache_dir)
  cached = images_lib.read_cache(cache, fingerprint)
  if cached is not None:
    arrays, meta = cached
    return Omniglot(arrays['images'], meta['characters'], fingerprint,
                    images_lib.Provenance.from_arrays(arrays))
  characters, images = [], []
  decoder = images_lib.Decoder(conversion(size))
  for path, image_set in zip(sources, SETS):
    names, array = _read_set(path, image_set, decoder, show_progress)
    characters += names
    images.append(array)
  data = Omniglot(np.concatenate(images), characters, fingerprint, decoder.provenance())
  images_lib.write_cache(cache, fingerprint, {'characters': characters}, images=data.images,
                         **data.provenance.to_arrays())
  return data


def prepare_images(images, size: int = 28) -> np.ndarray:
  """Raw drawings -> float32 [n, size, size, 1], strokes = 1, as in training.

  Any size, grayscale ([n, H, W] or [n, H, W, 1]) or RGB, bool, uint8
  (0..255) or float (0..1); drawings dark on light (as in the official
  release) are inverted.
  """
  images = np.asarray(images)
  if images.ndim == 4:
    images = images.mean(-1) if images.shape[-1] in (3, 4) else images[..., 0]
  if images.ndim != 3:
    raise ValueError(f'images must be [n, H, W] or [n, H, W, C], got shape {images.shape}')
  grey = images.astype(np.float32)
  if np.issubdtype(images.dtype, np.integer) or (images.dtype != bool and grey.max() > 1.0):
    grey = grey / 255.0
  out = np.empty((len(grey), size, size, 1), np.float32)
  for i, image in enumerate(grey):
    if image.mean() < 0.5:  # bright strokes on a dark ground: make it paper-white
      image = 1.0 - image
    paper = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    out[i, ..., 0] = preprocess(paper, size).astype(np.float32) / 255.0
  return out


@dataclasses.dataclass(frozen=True)
class OmniglotSettings(settings_lib.Section):
  data_dir: Optional[str] = setting(
      None, 'folder of the official zips or their extracted folders (default: '
      '$METAJAX_OMNIGLOT_DIR, else ~/.cache/metajax/omniglot, downloaded if missing)')
  data_source: str = setting('files', 'files: the official Omniglot zips or folders | tfds: '
                             'tfds.data_source("omniglot") in --data_dir (tfds\' folder)',
                             choices=('files', 'tfds'))
  split: str = setting('vinyals', 'class split: vinyals (1100/100/423 characters, rotations) | '
                       'lake (background / evaluation)', choices=('vinyals', 'lake'))
  rotations: Optional[bool] = setting(None, 'rotations by 90/180/270 degrees as new classes '
                                      '(default: on for vinyals, off for lake)')
  image_size: int = setting(28, 'side of the square images the 105x105 drawings are resized '
                            'to', minimum=8, maximum=105)
  augment: bool = setting(False, 'random 2-pixel shifts of training images')
  distort: bool = setting(False, 'random affine distortions of training images: rotation, '
                          'shear, scale and shift in Koch et al. 2015\'s ranges')
  within_alphabet: bool = setting(False, 'the classes of each episode from one alphabet, as '
                                  'in Lake et al. 2015\'s one-shot task (alphabets with fewer '
                                  'classes than the episode\'s ways are skipped)')
  paired_drawers: bool = setting(False, 'the same drawers for every class of an episode: the '
                                 'support images by one drawer, the queries by others (Lake '
                                 'et al. 2015)')

  def resolved(self) -> 'OmniglotSettings':
    rotations = self.split == 'vinyals' if self.rotations is None else self.rotations
    return self.replace(rotations=rotations)


def class_names(characters: list[str], classes: np.ndarray, rotations: bool) -> list[str]:
  """The names of `classes` [n, 2] (character, quarter turns), '<character>/rot90' if rotated."""
  if not rotations:
    return [characters[c] for c, _ in classes]
  return [f'{characters[c]}/rot{90 * t}' for c, t in classes]


def _small_alphabets(characters, split, rotations, alphabet_of, alphabets, spec) -> str:
  """'; skipped: ...' naming the alphabets too small for the episodes, or ''."""
  skipped = []
  for subset, ways in (('train', spec.train_ways), ('val', spec.ways), ('test', spec.ways)):
    groups = alphabet_of[splits.classes(characters, split, subset, rotations)[:, 0]]
    ids, sizes = np.unique(groups, return_counts=True)
    small = [f'{alphabets[g].split("/")[1]} ({k})' for g, k in zip(ids, sizes) if k < ways]
    if small:
      skipped.append(f'{subset} ({ways} ways): {", ".join(small)}')
  return '; skipped, too few classes: ' + '; '.join(skipped) if skipped else ''


def make_source(settings: OmniglotSettings, spec: EpisodeSpec,
                show_progress: bool = True) -> episodes.EpisodeSource:
  """Episodes of `settings.split`'s classes, from the files or from tfds."""
  if settings.within_alphabet and spec.episodes == 'variable':
    settings_lib.fail('within_alphabet', True, 'takes fixed episodes (--episodes=fixed); '
                      'variable episodes draw their own ways')
  if settings.paired_drawers and spec.episodes == 'variable':
    settings_lib.fail('paired_drawers', True, 'takes fixed episodes (--episodes=fixed)')
  if settings.paired_drawers and settings.data_source == 'tfds':
    settings_lib.fail('paired_drawers', True, 'needs the drawers, which tfds does not keep '
                      '(its drawings come in record order); use --data_source=files')
  if settings.data_source == 'tfds':
    data = load_tfds(settings.data_dir, size=settings.image_size, show_progress=show_progress)
    title = f'omniglot from tfds in {settings.data_dir or "~/tensorflow_datasets"}'
  else:
    data = load(settings.data_dir, size=settings.image_size, show_progress=show_progress)
    data_dir = settings.data_dir or default_data_dir()
    title = f'omniglot from {data_dir}'
    files = functools.cache(lambda: character_files(data_dir))
  split, rotations = settings.split, settings.resolved().rotations
  alphabets = sorted({splits.alphabet(c) for c in data.characters})
  alphabet_of = np.array([alphabets.index(splits.alphabet(c)) for c in data.characters])

  transform = omniglot_augment.training_transform(settings.distort, settings.augment)

  def sampler(subset, seed):
    classes = splits.classes(data.characters, split, subset, rotations)
    return episodes.make_sampler(
        spec, subset, data.images, classes, seed, name=f'{split} {subset}',
        transform=transform if subset == 'train' else None,
        groups=alphabet_of[classes[:, 0]] if settings.within_alphabet else None,
        group_names=alphabets, shared_drawings=settings.paired_drawers)

  def split_info(subset):
    classes = splits.classes(data.characters, split, subset, rotations)
    chars = np.unique(classes[:, 0])
    per = data.images.shape[1]
    notes = []
    if data.provenance is not None:
      rows = (chars[:, None] * per + np.arange(per)).ravel()
      notes = images_lib.describe(data.provenance.take(rows), conversion(data.images.shape[-1]))
    if settings.data_source == 'tfds':
      digest = hashlib.sha256(repr([data.characters[c] for c in chars]).encode())
      digest.update(np.ascontiguousarray(data.images[chars]).tobytes())
      fingerprint = digest.hexdigest()
    else:
      fingerprint = catalog.fingerprint(e for c in chars for e in files()[data.characters[c]])
    detail = f'{count(len(chars), "character")}, each at 4 rotations' if rotations else ''
    return catalog.SplitInfo(class_names(data.characters, classes, rotations),
                             len(chars) * per, fingerprint, tuple(notes), detail)

  notes = [f'classes: the characters of the {split} split'
           + (', each rotated by 0, 90, 180 and 270 degrees' if rotations else '')]
  if settings.augment:
    notes.append('training images shifted at random by up to 2 pixels (augment=True)')
  if settings.distort:
    notes.append('training images distorted at random: rotation up to 10 degrees, shear up to '
                 '0.3, scale 0.8 to 1.2 and shift up to 2/105 of the side (distort=True)')
  if settings.within_alphabet:
    notes.append('episodes within one alphabet (within_alphabet=True), drawn uniformly among '
                 'the alphabets with at least as many classes as the episode\'s ways'
                 + _small_alphabets(data.characters, split, rotations, alphabet_of, alphabets,
                                    spec))
  if settings.paired_drawers:
    notes.append('the same drawers for every class of an episode (paired_drawers=True)')
  held_out = {split: functools.partial(sampler, split, seed)
              for split, seed in registry.EVAL_SEEDS.items()}
  size = data.images.shape[-1]
  return episodes.EpisodeSource(sampler('train', spec.seed), held_out, spec.batch_size,
                                eval_images=4000,
                                catalog=catalog.Catalog(title, (size, size, 1), split_info, notes))


SPEC = registry.register(registry.DatasetSpec(
    name='omniglot', task='classification', make_source=make_source,
    input_shape=lambda settings: (settings.image_size, settings.image_size, 1),
    settings=OmniglotSettings,
    # 5-way 1-shot with 15 queries per class (Vinyals et al. 2016, Finn et al. 2017), sized
    # for a 2-core CPU; each algorithm's paper protocol refines it (its dataset_defaults).
    defaults={'ways': 5, 'shots': 1, 'query': 15, 'meta_batch_size': 32, 'num_steps': 2000,
              'checkpoint_every': 250, 'log_every': 50, 'channels': 64},
    prepare=lambda images, settings: prepare_images(images, settings.image_size),
    default_data_dir=lambda settings: (default_data_dir() if settings.data_source == 'files'
                                       else None)))
