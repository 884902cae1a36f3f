"""The one image pipeline of every image source: decode, convert, resize, cache, report.

Every image metajax reads (Omniglot drawings, class folders, miniImageNet
files, tfds records, a user's images at prediction time) goes through a
`Conversion`: Pillow opens it, converts it to grayscale ('L') or RGB, inverts
it if asked (Omniglot: strokes bright on a dark ground) and resizes it to a
square with Lanczos filtering, giving uint8 [H, W, C]. A `Decoder` applies a
conversion and notes each image's mode and size as found (`Provenance`), from
which `describe` tells in plain words what was converted and resized.

Decoded arrays are cached in `$METAJAX_CACHE_DIR`, else `~/.cache/metajax`
(`cache.default_cache_dir`), never in a data folder, under a name holding a
fingerprint of the source files (`files_fingerprint`: names, sizes and
modification times) and `CACHE_VERSION`; a cache file also records both, so a
cache of another version or other files is rebuilt, never misread.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
from PIL import Image

from metajax.data import cache
from metajax.data.catalog import count

# 2: one pipeline for every source; each cache holds its images' provenance (v1: per source).
CACHE_VERSION = 2
GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
MODE_NAMES = {'1': '1-bit', 'L': 'grayscale', 'LA': 'grayscale+alpha', 'P': 'palette',
              'PA': 'palette+alpha', 'RGB': 'RGB', 'RGBA': 'RGBA', 'RGBX': 'RGBX',
              'CMYK': 'CMYK', 'YCbCr': 'YCbCr', 'LAB': 'Lab', 'HSV': 'HSV',
              'I': '32-bit grayscale', 'I;16': '16-bit grayscale', 'F': 'floating-point'}
RESIZE_GROUPS = 4  # source sizes named one by one in `describe`
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

Source = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]


def image_extensions() -> frozenset[str]:
  """File name endings of the formats Pillow reads ('.png', '.jpg', ...)."""
  return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                   if fmt in Image.OPEN)


def mode_name(mode: str) -> str:
  return MODE_NAMES.get(mode, f'{mode}-mode')


@dataclasses.dataclass(frozen=True)
class Conversion:
  """How an image becomes a uint8 array [size, size, channels].

  Attributes:
    mode: 'L' (grayscale, one channel) or 'RGB' (three).
    size: the side of the square it is resized to (Lanczos), unless it has it.
    invert: 255 - value, after the colour conversion and before resizing.
  """
  mode: str
  size: int
  invert: bool = False

  @classmethod
  def of(cls, channels: int, size: int, invert: bool = False) -> 'Conversion':
    return cls('L' if channels == 1 else 'RGB', size, invert)

  @property
  def channels(self) -> int:
    return 1 if self.mode == 'L' else 3

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.size, self.size, self.channels)

  def apply(self, image: Image.Image) -> np.ndarray:
    """uint8 [size, size, channels] of a Pillow image."""
    image = image.convert(self.mode)
    if self.invert:
      image = Image.fromarray(255 - np.asarray(image, dtype=np.uint8))
    if image.size != (self.size, self.size):
      image = image.resize((self.size, self.size), Image.LANCZOS)
    array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def as_pil(array: np.ndarray) -> Image.Image:
  """A Pillow image of an array [H, W] or [H, W, C] (a single channel dropped)."""
  array = np.asarray(array)
  return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)


class Provenance(NamedTuple):
  """Each decoded image's Pillow mode and size as found, before conversion."""
  modes: tuple[str, ...]  # the distinct modes found
  mode: np.ndarray        # uint8 [n]: index into `modes` of each image
  size: np.ndarray        # int32 [n, 2]: (width, height) of each image

  def take(self, rows) -> 'Provenance':
    """The provenance of images `rows` (indices or a mask)."""
    return Provenance(self.modes, self.mode[rows], self.size[rows])

  @classmethod
  def concat(cls, parts: Sequence['Provenance']) -> 'Provenance':
    modes = tuple(dict.fromkeys(m for p in parts for m in p.modes))
    index = {m: i for i, m in enumerate(modes)}
    remap = lambda p: np.asarray([index[m] for m in p.modes], np.uint8)[p.mode]
    return cls(modes, np.concatenate([remap(p) for p in parts]).astype(np.uint8),
               np.concatenate([p.size for p in parts]).astype(np.int32).reshape(-1, 2))

  def to_arrays(self) -> dict[str, np.ndarray]:
    """Arrays for a cache file (`from_arrays` reads them back)."""
    return {'source_modes': np.array(json.dumps(self.modes)), 'source_mode': self.mode,
            'source_size': self.size}

  @classmethod
  def from_arrays(cls, arrays) -> 'Provenance':
    return cls(tuple(json.loads(str(arrays['source_modes']))), arrays['source_mode'],
               arrays['source_size'])


class Decoder:
  """Applies a `Conversion` to images, noting each one's mode and size as found.

  Call it on a file path, the bytes of a file, an array or a Pillow image.
  """

  def __init__(self, conversion: Conversion):
    self.conversion = conversion
    self._modes: dict[str, int] = {}
    self._mode: list[int] = []
    self._size: list[tuple[int, int]] = []

  def __call__(self, source: Source) -> np.ndarray:
    if isinstance(source, (str, os.PathLike)):
      with Image.open(source) as image:
        return self._convert(image)
    if isinstance(source, bytes):
      with Image.open(io.BytesIO(source)) as image:
        return self._convert(image)
    return self._convert(source if isinstance(source, Image.Image) else as_pil(source))

  def __len__(self) -> int:
    """The images decoded so far."""
    return len(self._mode)

  def _convert(self, image: Image.Image) -> np.ndarray:
    mode, size = image.mode, image.size
    array = self.conversion.apply(image)
    self._mode.append(self._modes.setdefault(mode, len(self._modes)))
    self._size.append(size)
    return array

  def provenance(self) -> Provenance:
    return Provenance(tuple(self._modes), np.asarray(self._mode, np.uint8),
                      np.asarray(self._size, np.int32).reshape(-1, 2))


def probe(path: str) -> Union[tuple[str, tuple[int, int]], str]:
  """(mode, size) from an image file's header, or why it cannot be read."""
  try:
    with Image.open(path) as image:
      return image.mode, image.size
  except UNREADABLE as e:
    return reason(e)


def reason(error: BaseException) -> str:
  """Why a file is unreadable, in a few words ('cannot identify image file', ...)."""
  text = str(error).split(' \'')[0].split(' "')[0].strip() or type(error).__name__
  return text if len(text) <= 80 else text[:77] + '...'


def describe(provenance: Provenance, conversion: Conversion) -> list[str]:
  """What `conversion` did to the images of `provenance`, one line a change.

  E.g. '12 RGB images converted to grayscale', '30 images resized from 32x32
  to 28x28'. Images that needed nothing are not mentioned.
  """
  lines = []
  for i, mode in enumerate(provenance.modes):
    n = int(np.sum(provenance.mode == i))
    if n and mode != conversion.mode:
      lines.append(f'{count(n, mode_name(mode) + " image")} converted to '
                   f'{mode_name(conversion.mode)}')
  total = len(provenance.mode)
  if conversion.invert and total:
    lines.append(f'{count(total, "image")} inverted (dark on light made light on dark)')
  side = conversion.size
  if total:
    sizes, counts = np.unique(provenance.size, axis=0, return_counts=True)
    resized = [(int(n), int(w), int(h)) for (w, h), n in zip(sizes, counts)
               if (w, h) != (side, side)]
    resized.sort(key=lambda g: (-g[0], g[1], g[2]))
    shown = resized if len(resized) <= RESIZE_GROUPS + 1 else resized[:RESIZE_GROUPS]
    for n, w, h in shown:
      lines.append(f'{count(n, "image")} resized from {w}x{h} to {side}x{side}')
    rest = resized[len(shown):]
    if rest:
      n = sum(g[0] for g in rest)
      lines.append(f'{count(n, "image")} of {len(rest)} other sizes resized to {side}x{side}')
  return lines


def files_fingerprint(root: str, files: Sequence[str], *settings: Any) -> str:
  """sha256 of `settings` and each file's name, size and modification time: a cache key."""
  digest = hashlib.sha256(repr(settings).encode())
  for name in files:
    stat = os.stat(os.path.join(root, name))
    digest.update(f'{name}:{stat.st_size}:{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()


def cache_file(prefix: str, fingerprint: str, cache_dir: Optional[str] = None) -> str:
  """The cache file of `prefix` (e.g. 'folders_birds') for sources of `fingerprint`."""
  return os.path.join(cache_dir or cache.default_cache_dir(),
                      f'{prefix}_v{CACHE_VERSION}_{fingerprint[:16]}.npz')


def read_cache(path: str, fingerprint: str) -> Optional[tuple[dict[str, np.ndarray], dict]]:
  """(arrays, meta) of a cache file written by `write_cache` for `fingerprint`, else None.

  A missing or unreadable file, one of another `CACHE_VERSION` or another
  fingerprint gives None: the caller rebuilds it.
  """
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      meta = json.loads(str(f['meta']))
      if meta.get('version') != CACHE_VERSION or meta.get('fingerprint') != fingerprint:
        return None
      return {k: f[k] for k in f.files if k != 'meta'}, meta
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None


def write_cache(path: str, fingerprint: str, meta: dict, **arrays: np.ndarray) -> None:
  """Writes `arrays` and the JSON `meta` to `path` atomically, with version and fingerprint."""
  meta = {**meta, 'version': CACHE_VERSION, 'fingerprint': fingerprint}
  cache.save_npz(path, meta=np.array(json.dumps(meta)), **arrays)
