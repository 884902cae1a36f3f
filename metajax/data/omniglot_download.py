"""The official Omniglot release: its layout, its drawings as arrays, and downloading it."""

import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image
import tqdm

from metajax.data import images as images_lib

SETS = ('background', 'evaluation')
ARCHIVES = tuple(f'images_{s}.zip' for s in SETS)
URL = 'https://github.com/brendenlake/omniglot/raw/master/python/'
ENV_DATA_DIR = 'METAJAX_OMNIGLOT_DIR'
ENV_URL = 'METAJAX_OMNIGLOT_URL'
IMAGES_PER_CHARACTER = 20


class Omniglot(NamedTuple):
  """All of Omniglot: `images[c, i]` is drawing i of character c."""
  images: np.ndarray      # uint8 [1623, 20, size, size], stroke = 255
  characters: list[str]   # '<set>/<Alphabet>/characterNN', background first
  fingerprint: str        # sha256 of the source files it was built from
  # Each drawing's mode and size as found, in the order of `images` (c * 20 + i).
  provenance: Optional[images_lib.Provenance] = None


def conversion(size: int = 28) -> images_lib.Conversion:
  """Grayscale, inverted (strokes bright on a dark ground), resized to `size` squares."""
  return images_lib.Conversion('L', size, invert=True)


def preprocess(image: Image.Image, size: int = 28) -> np.ndarray:
  """An official drawing (paper = 1, stroke = 0) -> uint8 [size, size], stroke = 255."""
  return conversion(size).apply(image)[..., 0]


def missing_sets(data_dir: str) -> list[str]:
  """The sets of which neither the zip nor the extracted folder is in `data_dir`."""
  return [s for s in SETS if not (os.path.isfile(os.path.join(data_dir, f'images_{s}.zip'))
                                  or os.path.isdir(os.path.join(data_dir, f'images_{s}')))]


def download(data_dir: str, url: Optional[str] = None, show_progress: bool = True) -> None:
  """Downloads the missing official zips into `data_dir`, with a progress bar.

  Raises:
    FileNotFoundError: the files could not be fetched (offline, say); the
      message names the files and the folder to put them in.
  """
  url = url or os.environ.get(ENV_URL, URL)
  missing = missing_sets(data_dir)
  created = _first_missing_folder(data_dir) if missing else None
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
      if created is not None:  # nothing is left behind by a download that failed
        _remove_empty_folders(data_dir, created)
      raise FileNotFoundError(
          f'Omniglot is not in data_dir={data_dir} and could not be downloaded '
          f'from {url} ({e}). Put {" and ".join(ARCHIVES)} (the official release: '
          f'{URL}), or the folders they extract to, in {data_dir}, or set '
          f'data_dir=FOLDER or ${ENV_DATA_DIR} to the folder that holds them.') from e


def _first_missing_folder(path: str) -> Optional[str]:
  """The outermost folder of `path` that does not exist yet (None: `path` exists)."""
  path, first = os.path.abspath(path), None
  while not os.path.exists(path):
    path, first = os.path.dirname(path), path
  return first


def _remove_empty_folders(path: str, outermost: str) -> None:
  """Removes `path` and its parents up to `outermost`, as long as they are empty."""
  path, outermost = os.path.abspath(path), os.path.abspath(outermost)
  while os.path.isdir(path) and not os.listdir(path):
    os.rmdir(path)
    if path == outermost:
      break
    path = os.path.dirname(path)


def _check_zip(path: str, name: str) -> None:
  try:
    with zipfile.ZipFile(path) as z:
      bad = z.testzip()
  except zipfile.BadZipFile as e:
    raise ValueError(f'{name} is not a valid zip archive ({e})') from e
  if bad is not None:
    raise ValueError(f'{name} is corrupt: {bad} fails its CRC check')
