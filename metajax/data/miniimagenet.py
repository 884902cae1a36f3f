"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle class split.

100 ImageNet classes of 600 images, 64 for meta-training, 16 for validation,
20 for meta-testing, at 84x84 RGB. Two layouts are read from `data_dir`
(default `$METAJAX_MINIIMAGENET_DIR`, else `~/.cache/metajax/miniimagenet`):

- the split CSVs of Ravi & Larochelle, `train.csv`, `val.csv`, `test.csv`
  (header `filename,label`), beside a folder `images/` holding the files they
  name; images are converted to RGB and resized to 84x84 (Lanczos) by
  `metajax.data.images`, then kept in a uint8 cache that is rebuilt when the
  CSVs or images change;
- the widely used pickle caches `mini-imagenet-cache-{train,val,test}.pkl`,
  each a dict with `image_data` (uint8 [N, 84, 84, 3]) and `class_dict`
  (class name -> list of row indices).

The data is not freely downloadable; see docs/data.md for how to obtain it.
Inputs are normalised per channel with the usual miniImageNet mean and
standard deviation; `--augment` adds random 8-pixel-padded crops and
horizontal flips to the meta-training episodes.

References:
  Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016.
  Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR 2017.
"""

import csv
import dataclasses
import functools
import hashlib
import os
import pickle
from typing import NamedTuple, Optional

import numpy as np
import tqdm

from metajax import settings as settings_lib
from metajax.data import catalog, episodes, images as images_lib, registry
from metajax.data.source import EpisodeSpec
from metajax.settings import setting

ENV_DATA_DIR = 'METAJAX_MINIIMAGENET_DIR'
SUBSETS = ('train', 'val', 'test')
SIZE = 84
MEAN = np.array([120.39586422, 115.59361427, 104.54012653], np.float32) / 255.0
STD = np.array([70.68188272, 68.27635443, 72.54505529], np.float32) / 255.0


def default_data_dir() -> str:
  return os.environ.get(ENV_DATA_DIR) or os.path.join(
      os.path.expanduser('~'), '.cache', 'metajax', 'miniimagenet')


def detect_format(data_dir: str) -> str:
  """'pickle' or 'csv', or FileNotFoundError naming what is expected where."""
  if all(os.path.isfile(os.path.join(data_dir, f'mini-imagenet-cache-{s}.pkl'))
         for s in SUBSETS):
    return 'pickle'
  if (all(os.path.isfile(os.path.join(data_dir, f'{s}.csv')) for s in SUBSETS)
      and os.path.isdir(os.path.join(data_dir, 'images'))):
    return 'csv'
  raise FileNotFoundError(
      f'miniImageNet is not in data_dir={data_dir}: put there either train.csv, '
      'val.csv, test.csv and the folder images/ (Ravi & Larochelle), or '
      'mini-imagenet-cache-train.pkl, -val.pkl and -test.pkl (see docs/data.md).')


class SplitImages(NamedTuple):
  """One split as read."""
  classes: list[str]       # class ids (wnids), sorted
  images: np.ndarray       # uint8 [classes, per class, 84, 84, 3]
  files: list[tuple[str, int]]  # (path relative to data_dir, size in bytes) of its files
  provenance: Optional[images_lib.Provenance] = None  # images' modes and sizes as found (CSV)


def _group(labels: list[str], images: np.ndarray, where: str):
  """(classes, images [classes, per class, ...], the rows of `images` in that order)."""
  classes = sorted(set(labels))
  index = {c: [i for i, l in enumerate(labels) if l == c] for c in classes}
  counts = {len(v) for v in index.values()}
  if len(counts) != 1:
    raise ValueError(f'{where}: classes have different numbers of images ({sorted(counts)})')
  return classes, np.stack([images[index[c]] for c in classes]), np.concatenate(
      [index[c] for c in classes])


def _load_pickle(data_dir: str, subset: str) -> SplitImages:
  name = f'mini-imagenet-cache-{subset}.pkl'
  path = os.path.join(data_dir, name)
  try:
    with open(path, 'rb') as f:
      data = pickle.load(f)
    images = np.asarray(data['image_data'], np.uint8)
    class_dict = data['class_dict']
  except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f'{path} is not a miniImageNet pickle cache ({type(e).__name__}: {e})') from e
  if images.shape[1:] != (SIZE, SIZE, 3):
    raise ValueError(f'{path}: images of shape {images.shape[1:]}, expected (84, 84, 3)')
  labels = [''] * len(images)
  for label, rows in class_dict.items():
    for row in rows:
      labels[row] = label
  classes, grouped, _ = _group(labels, images, path)
  return SplitImages(classes, grouped, [(name, os.path.getsize(path))])


def _load_csv(data_dir: str, subset: str, cache_dir: Optional[str],
              show_progress: bool) -> SplitImages:
  path = os.path.join(data_dir, f'{subset}.csv')
  with open(path, newline='') as f:
    rows = [r for r in csv.reader(f) if r]
  if not rows or [c.strip() for c in rows[0]] != ['filename', 'label']:
    raise ValueError(f'{path}: expected a header "filename,label"')
  rows = rows[1:]
  with open(path, 'rb') as f:
    listing = f.read()
  names = [f'images/{name}' for name, _ in rows]
  fingerprint = images_lib.files_fingerprint(data_dir, names,
                                             hashlib.sha256(listing).hexdigest())
  files = [(f'{subset}.csv', len(listing))] + [
      (n, os.path.getsize(os.path.join(data_dir, n))) for n in names]
  cache = images_lib.cache_file(f'miniimagenet_{subset}', fingerprint, cache_dir)
  cached = images_lib.read_cache(cache, fingerprint)
  if cached is not None:
    arrays, meta = cached
    return SplitImages(meta['classes'], arrays['images'], files,
                       images_lib.Provenance.from_arrays(arrays))
  decoder = images_lib.Decoder(images_lib.Conversion('RGB', SIZE))
  images = np.zeros((len(rows), SIZE, SIZE, 3), np.uint8)
  for i, name in enumerate(tqdm.tqdm(names, desc=f'miniimagenet {subset}',
                                     disable=not show_progress, mininterval=2)):
    try:
      images[i] = decoder(os.path.join(data_dir, name))
    except images_lib.UNREADABLE as e:
      raise ValueError(f'{os.path.join(data_dir, name)} is not a readable image '
                       f'({images_lib.reason(e)})') from e
  classes, grouped, order = _group([label for _, label in rows], images, path)
  provenance = decoder.provenance().take(order)
  images_lib.write_cache(cache, fingerprint, {'classes': classes}, images=grouped,
                         **provenance.to_arrays())
  return SplitImages(classes, grouped, files, provenance)


def load_split(subset: str, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
               show_progress: bool = True) -> SplitImages:
  """One split: its class ids, uint8 images [classes, per class, 84, 84, 3] and files."""
  data_dir = data_dir or default_data_dir()
  if detect_format(data_dir) == 'pickle':
    return _load_pickle(data_dir, subset)
  return _load_csv(data_dir, subset, cache_dir, show_progress)


def load(subset: str, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
         show_progress: bool = True) -> tuple[list[str], np.ndarray]:
  """(class names, uint8 images [classes, per class, 84, 84, 3]) of one split."""
  split = load_split(subset, data_dir, cache_dir, show_progress)
  return split.classes, split.images


def normalize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Per-channel normalisation of float images in [0, 1]."""
  del rng
  return (x - MEAN) / STD


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random 8-pixel-padded crops and horizontal flips, then normalisation.

  Args:
    x: float [..., H, W, 3] images in [0, 1].
    rng: the episode's generator.
  """
  shape = x.shape
  x = x.reshape((-1,) + shape[-3:])
  padded = np.pad(x, ((0, 0), (8, 8), (8, 8), (0, 0)), mode='reflect')
  dy, dx = rng.integers(0, 17, size=(2, len(x)))
  flips = rng.random(len(x)) < 0.5
  out = np.empty_like(x)
  for i in range(len(x)):
    crop = padded[i, dy[i]:dy[i] + shape[-3], dx[i]:dx[i] + shape[-2]]
    out[i] = crop[:, ::-1] if flips[i] else crop
  return normalize(out.reshape(shape), rng)


def prepare_images(images) -> np.ndarray:
  """Raw RGB images [n, 84, 84, 3] (uint8 0..255 or float 0..1) -> normalised float32."""
  images = np.asarray(images)
  x = images.astype(np.float32) / (255.0 if np.issubdtype(images.dtype, np.integer) else 1.0)
  if x.shape[1:] != (SIZE, SIZE, 3):
    raise ValueError(f'images must be [n, {SIZE}, {SIZE}, 3], got shape {x.shape}')
  return normalize(x, None)


@dataclasses.dataclass(frozen=True)
class MiniImageNetSettings(settings_lib.Section):
  data_dir: Optional[str] = setting(
      None, 'folder of the split CSVs + images/ or the pickle caches (default: '
      '$METAJAX_MINIIMAGENET_DIR, else ~/.cache/metajax/miniimagenet)')
  augment: bool = setting(False, 'random 8-pixel-padded crops and horizontal flips of '
                          'training episodes')


def make_source(settings: MiniImageNetSettings, spec: EpisodeSpec,
                show_progress: bool = True) -> episodes.EpisodeSource:
  """Episodes of the Ravi & Larochelle split; `settings.augment` augments training episodes."""
  data_dir = settings.data_dir or default_data_dir()
  split_images = functools.cache(
      lambda subset: load_split(subset, data_dir, show_progress=show_progress))

  def sampler(subset, seed, transform):
    images = split_images(subset).images
    classes = np.stack([np.arange(len(images)), np.zeros(len(images), np.int64)], -1)
    return episodes.make_sampler(spec, subset, images, classes, seed,
                                 name=f'miniimagenet {subset}', transform=transform)

  def split_info(subset):
    data = split_images(subset)
    notes = ([] if data.provenance is None else
             images_lib.describe(data.provenance, images_lib.Conversion('RGB', SIZE)))
    return catalog.SplitInfo(list(data.classes), int(np.prod(data.images.shape[:2])),
                             catalog.fingerprint(data.files), tuple(notes))

  layout = ('the split CSVs and images/' if detect_format(data_dir) == 'csv'
            else 'the pickle caches')
  notes = ['inputs normalised per channel with the miniImageNet mean and standard deviation']
  if settings.augment:
    notes.append('training images cropped at random (8-pixel padding) and flipped '
                 '(augment=True)')
  held_out = {split: functools.partial(sampler, split, seed, normalize)
              for split, seed in registry.EVAL_SEEDS.items()}
  train = sampler('train', spec.seed, augment if settings.augment else normalize)
  return episodes.EpisodeSource(
      train, held_out, spec.batch_size, eval_images=1600,
      catalog=catalog.Catalog(f'miniimagenet from {data_dir} ({layout})', (SIZE, SIZE, 3),
                              split_info, notes))


SPEC = registry.register(registry.DatasetSpec(
    name='miniimagenet', task='classification', input_shape=(SIZE, SIZE, 3),
    make_source=make_source, settings=MiniImageNetSettings,
    # 5-way 1-shot with 15 queries per class; Conv4 of 32 filters (Finn et al. 2017).
    defaults={'ways': 5, 'shots': 1, 'query': 15, 'meta_batch_size': 4, 'num_steps': 2000,
              'checkpoint_every': 250, 'log_every': 50, 'channels': 32},
    prepare=lambda images, settings: prepare_images(images),
    default_data_dir=lambda settings: default_data_dir()))
