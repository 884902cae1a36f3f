"""Omniglot (Lake et al. 2015) from the official release, as a compact uint8 array.

The official release is two zips, `images_background.zip` (964 characters) and
`images_evaluation.zip` (659), each holding
`images_<set>/<Alphabet>/characterNN/IIII_DD.png`: 105x105 1-bit drawings,
white paper = 1, stroke = 0. Either zip may also be present extracted, as the
folder `images_<set>/`. metajax loads all 1623 characters x 20 drawings,
inverts them (stroke = 1), resizes 105 -> 28 with anti-aliasing (Lanczos) and
keeps the result as uint8 in a cache file that is rebuilt when the source
files change. The cache is written to a temporary file and renamed, so a
failed build never leaves a half-built cache behind.

References:
  Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through
  probabilistic program induction", Science 2015.
"""

import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image
import tqdm

SETS = ('background', 'evaluation')
ARCHIVES = tuple(f'images_{s}.zip' for s in SETS)
URL = 'https://github.com/brendenlake/omniglot/raw/master/python/'
ENV_DATA_DIR = 'METAJAX_OMNIGLOT_DIR'
ENV_CACHE_DIR = 'METAJAX_CACHE_DIR'
ENV_URL = 'METAJAX_OMNIGLOT_URL'
IMAGES_PER_CHARACTER = 20
CACHE_VERSION = 1


class Omniglot(NamedTuple):
  """All of Omniglot: `images[c, i]` is drawing i of character c."""
  images: np.ndarray      # uint8 [1623, 20, size, size], stroke = 255
  characters: list[str]   # '<set>/<Alphabet>/characterNN', background first
  fingerprint: str        # sha256 of the source files it was built from


def default_data_dir() -> str:
  """`$METAJAX_OMNIGLOT_DIR`, else `~/.cache/metajax/omniglot`."""
  return os.environ.get(ENV_DATA_DIR) or os.path.join(
      os.path.expanduser('~'), '.cache', 'metajax', 'omniglot')


def default_cache_dir(data_dir: str) -> str:
  """`$METAJAX_CACHE_DIR`, else `data_dir` if writable, else `~/.cache/metajax`."""
  if os.environ.get(ENV_CACHE_DIR):
    return os.environ[ENV_CACHE_DIR]
  if os.path.isdir(data_dir) and os.access(data_dir, os.W_OK):
    return data_dir
  return os.path.join(os.path.expanduser('~'), '.cache', 'metajax')


def _source(data_dir: str, image_set: str) -> Optional[str]:
  """The zip or the extracted folder of one set, or None."""
  folder = os.path.join(data_dir, f'images_{image_set}')
  archive = folder + '.zip'
  if os.path.isfile(archive):
    return archive
  if os.path.isdir(folder):
    return folder
  return None


def download(data_dir: str, url: Optional[str] = None, show_progress: bool = True) -> None:
  """Downloads the missing official zips into `data_dir`, with a progress bar.

  Raises:
    FileNotFoundError: the files could not be fetched (offline, say); the
      message names the files and the folder to put them in.
  """
  url = url or os.environ.get(ENV_URL, URL)
  missing = [s for s in SETS if _source(data_dir, s) is None]
  for image_set in missing:
    name = f'images_{image_set}.zip'
    try:
      os.makedirs(data_dir, exist_ok=True)
      with urllib.request.urlopen(url.rstrip('/') + '/' + name, timeout=30) as response:
        total = int(response.headers.get('Content-Length') or 0) or None
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f'.{name}.')
        with os.fdopen(fd, 'wb') as out, tqdm.tqdm(
            total=total, unit='B', unit_scale=True, desc=name,
            disable=not show_progress) as bar:
          for chunk in iter(lambda: response.read(1 << 20), b''):
            out.write(chunk)
            bar.update(len(chunk))
      _check_zip(tmp, name)
      os.replace(tmp, os.path.join(data_dir, name))
    except (urllib.error.URLError, OSError, ValueError) as e:
      if 'tmp' in locals() and os.path.exists(tmp):
        os.remove(tmp)
      raise FileNotFoundError(
          f'Omniglot is not in --data_dir={data_dir} and could not be downloaded '
          f'from {url} ({e}). Put {" and ".join(ARCHIVES)} (the official release: '
          f'{URL}), or the folders they extract to, in {data_dir}, or point '
          f'--data_dir / ${ENV_DATA_DIR} at them.') from e


def _check_zip(path: str, name: str) -> None:
  try:
    with zipfile.ZipFile(path) as z:
      bad = z.testzip()
  except zipfile.BadZipFile as e:
    raise ValueError(f'{name} is not a valid zip archive ({e})') from e
  if bad is not None:
    raise ValueError(f'{name} is corrupt: {bad} fails its CRC check')


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


def _read_set(path: str, image_set: str, size: int, show_progress: bool):
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
    names = []
    for root, _, files in os.walk(path):
      rel = os.path.relpath(root, os.path.dirname(path))
      names += [f'{rel}/{f}'.replace(os.sep, '/') for f in files if f.endswith('.png')]
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
  images = np.zeros((len(characters), IMAGES_PER_CHARACTER, size, size), np.uint8)
  try:
    for c, character in enumerate(tqdm.tqdm(characters, desc=f'omniglot {image_set}',
                                            disable=not show_progress, mininterval=2)):
      files = sorted(by_character[character])
      if len(files) != IMAGES_PER_CHARACTER:
        raise ValueError(f'{path}: {character} has {len(files)} drawings, expected '
                         f'{IMAGES_PER_CHARACTER}')
      for i, name in enumerate(files):
        images[c, i] = preprocess(Image.open(io.BytesIO(read(name))), size)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise ValueError(f'{path} is truncated or corrupt ({type(e).__name__}: {e}); '
                     'delete it and download it again') from e
  finally:
    if archive is not None:
      archive.close()
  return characters, images


def preprocess(image: Image.Image, size: int = 28) -> np.ndarray:
  """An official drawing (paper = 1, stroke = 0) -> uint8 [size, size], stroke = 255."""
  strokes = 255 - np.asarray(image.convert('L'), dtype=np.uint8)
  if strokes.shape != (size, size):
    strokes = np.asarray(Image.fromarray(strokes).resize((size, size), Image.LANCZOS))
  return strokes


def load_tfds(data_dir: Optional[str] = None, size: int = 28,
              show_progress: bool = True) -> Omniglot:
  """All 1623 characters from tensorflow-datasets' `omniglot` (no TensorFlow needed).

  Reads `tfds.data_source('omniglot', split=...)` from `data_dir` (tfds'
  own folder; default `~/tensorflow_datasets`): split `train` is the
  background set, `test` the evaluation set. Images are prepared exactly as
  from the official zips; character names are `<set>/<Alphabet>/characterNN`,
  as there, so the same class splits apply. tfds does not keep the file names,
  so the drawings of a character come in tfds' record order.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    alphabets = tfds.builder('omniglot', data_dir=data_dir).info.features['alphabet'].names
    characters, images = [], []
    for image_set, split in (('background', 'train'), ('evaluation', 'test')):
      source = tfds.data_source('omniglot', split=split, data_dir=data_dir, download=False)
      drawings: dict[str, list[np.ndarray]] = {}
      for i in tqdm.trange(len(source), desc=f'omniglot tfds {split}',
                           disable=not show_progress, mininterval=2):
        example = source[i]
        name = (f'{image_set}/{alphabets[int(example["alphabet"])]}/'
                f'character{int(example["alphabet_char_id"]) + 1:02d}')
        drawings.setdefault(name, []).append(
            preprocess(Image.fromarray(np.asarray(example['image'])), size))
      for name in sorted(drawings):
        if len(drawings[name]) != IMAGES_PER_CHARACTER:
          raise ValueError(f'tfds omniglot {split}: {name} has {len(drawings[name])} '
                           f'drawings, expected {IMAGES_PER_CHARACTER}')
        characters.append(name)
        images.append(np.stack(drawings[name]))
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, OSError) as e:
    raise FileNotFoundError(
        f'tensorflow-datasets has no prepared omniglot in --data_dir={data_dir} ({e}); '
        'prepare it with tfds (`tfds build omniglot`) or use --data_source=files') from e
  return Omniglot(np.stack(images), characters, 'tfds')


def load(data_dir: Optional[str] = None, cache_dir: Optional[str] = None, size: int = 28,
         download_missing: bool = True, show_progress: bool = True) -> Omniglot:
  """All 1623 characters, from the cache if it matches the source files.

  Args:
    data_dir: folder with the official zips or their extracted folders
      (default: `default_data_dir()`).
    cache_dir: where the uint8 cache lives (default: `default_cache_dir`).
    size: side of the resized images.
    download_missing: fetch missing zips from the official repository.
    show_progress: progress bars for download and the first build.

  Raises:
    FileNotFoundError: the files are missing and cannot be downloaded.
    ValueError: a source file is truncated or corrupt.
  """
  data_dir = data_dir or default_data_dir()
  if any(_source(data_dir, s) is None for s in SETS):
    if not download_missing:
      raise FileNotFoundError(
          f'Omniglot is not in --data_dir={data_dir}: put {" and ".join(ARCHIVES)} '
          f'(from {URL}), or the folders they extract to, there.')
    download(data_dir, show_progress=show_progress)
  sources = [_source(data_dir, s) for s in SETS]
  fingerprint = _fingerprint(sources)
  cache_dir = cache_dir or default_cache_dir(data_dir)
  cache = os.path.join(cache_dir, f'omniglot_{size}px_v{CACHE_VERSION}.npz')
  if os.path.exists(cache):
    try:
      with np.load(cache) as f:
        if str(f['fingerprint']) == fingerprint:
          return Omniglot(f['images'], json.loads(str(f['characters'])), fingerprint)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      pass  # an unreadable cache is rebuilt
  characters, images = [], []
  for path, image_set in zip(sources, SETS):
    names, array = _read_set(path, image_set, size, show_progress)
    characters += names
    images.append(array)
  data = Omniglot(np.concatenate(images), characters, fingerprint)
  os.makedirs(cache_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix='.omniglot.', suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, images=data.images, characters=json.dumps(characters),
               fingerprint=fingerprint)
    os.chmod(tmp, 0o644)
    os.replace(tmp, cache)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return data


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random shifts of up to 2 pixels (zero padding) of float images [..., H, W, C]."""
  shape = x.shape
  x = x.reshape((-1,) + shape[-3:])
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  dy, dx = rng.integers(0, 5, size=(2, len(x)))
  out = np.stack([p[a:a + shape[-3], b:b + shape[-2]] for p, a, b in zip(padded, dy, dx)])
  return out.reshape(shape)
