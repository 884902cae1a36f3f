"""Where decoded datasets are cached, and how a cache file is written safely.

Caches live in `$METAJAX_CACHE_DIR`, else `~/.cache/metajax`: never in a
folder of source data, which metajax only reads. A cache is written to a
temporary file and renamed, so a failed build never leaves half a cache.
"""

import os
import tempfile

import numpy as np

ENV_CACHE_DIR = 'METAJAX_CACHE_DIR'


def default_cache_dir() -> str:
  """`$METAJAX_CACHE_DIR`, else `~/.cache/metajax`: never a folder of source data."""
  return os.environ.get(ENV_CACHE_DIR) or os.path.join(os.path.expanduser('~'), '.cache',
                                                       'metajax')


def save_npz(path: str, **arrays) -> None:
  """`np.savez(path, **arrays)`, atomically (a temporary file renamed into place)."""
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path), suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
