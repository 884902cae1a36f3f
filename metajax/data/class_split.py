"""How the classes of a folder (or tfds) dataset are split into train / val / test.

By `DIR/splits.json` (`{"train": [...], "val": [...], "test": [...]}`), which
must name every class exactly once and nothing else, or else at random from a
fixed seed in proportions `split_fractions` (default 60%, 20%, 20%), so that
every run on the same classes tests on the same ones.
"""

import json
import os
from typing import Optional, Sequence

import numpy as np

from metajax.data.catalog import SPLITS, count, listing, percent

SPLIT_FILE = 'splits.json'
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0


def class_split(data_dir: Optional[str], classes: list[str],
                fractions: Optional[tuple[float, ...]],
                empty: Sequence[str] = ()) -> dict[str, list[int]]:
  """{'train', 'val', 'test': indices into `classes`}: from splits.json, else seeded fractions.

  Raises:
    ValueError: splits.json is not of that form, leaves classes out, names one
      more than once or names one that is not a class folder (all named, with
      the file), or `fractions` are given beside it.
  """
  path = os.path.join(data_dir or '', SPLIT_FILE)
  if data_dir is not None and os.path.isfile(path):
    if fractions is not None:
      raise ValueError(f'split_fractions={",".join(map(str, fractions))}: {path} sets the '
                       'class split; remove one of them')
    try:
      with open(path) as f:
        named = json.load(f)
      named = {s: named[s] for s in SPLITS}
      if not all(isinstance(v, list) and all(isinstance(n, str) for n in v)
                 for v in named.values()):
        raise TypeError('each split must be a list of class names')
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'{path} must be JSON {{"train": [...], "val": [...], "test": [...]}} '
                       f'of class folder names ({type(e).__name__}: {e})') from e
    _check_named(path, data_dir, named, classes, empty)
    index = {c: i for i, c in enumerate(classes)}
    return {s: [index[n] for n in names] for s, names in named.items()}
  return seeded_split(len(classes), fractions)


def _check_named(path: str, data_dir: str, named: dict[str, list[str]], classes: list[str],
                 empty: Sequence[str]) -> None:
  """Every class in exactly one split, and nothing else: else a ValueError naming them all."""
  known = set(classes)
  where: dict[str, list[str]] = {}
  for subset, names in named.items():
    for n in names:
      where.setdefault(n, []).append(subset)
  problems = []
  unknown = [n for n in where if n not in known and n not in empty]
  if unknown:
    verb = 'is not a class folder' if len(unknown) == 1 else 'are not class folders'
    problems.append(f'names {count(len(unknown), "class")} that {verb} of {data_dir}: '
                    f'{listing(unknown, quote=True)} '
                    f'(classes are folder paths relative to it, such as {classes[0]!r})')
  hollow = [n for n in where if n in empty]
  if hollow:
    problems.append(f'names {count(len(hollow), "class folder")} holding no readable image: '
                    f'{listing(hollow, quote=True)}')
  twice = {n: s for n, s in where.items() if len(s) > 1}
  if twice:
    problems.append(f'names {count(len(twice), "class")} more than once: ' + listing(
        [f'{n!r} ({", ".join(s)})' for n, s in twice.items()]))
  missing = [c for c in classes if c not in where]
  if missing:
    problems.append(f'leaves out {count(len(missing), "class")} of {data_dir}: '
                    f'{listing(missing, quote=True)}; put each class in train, val or test')
  if problems:
    raise ValueError(f'{path} ' + '; it '.join(problems))


def seeded_split(num_classes: int, fractions: Optional[tuple[float, ...]]) -> dict[str, list[int]]:
  """Classes 0..num_classes-1 split at random (fixed seed) in proportions `fractions`."""
  fractions = DEFAULT_FRACTIONS if fractions is None else fractions
  order = np.random.RandomState(SPLIT_SEED).permutation(num_classes)
  ends = np.round(np.cumsum(fractions) / np.sum(fractions) * num_classes).astype(int)
  parts = np.split(order, ends[:-1])
  return {s: sorted(int(i) for i in part) for s, part in zip(SPLITS, parts)}


def seeded_note(fractions: Optional[tuple[float, ...]]) -> str:
  """'classes split at random (fixed seed): 60% train, 20% val, 20% test'."""
  fractions = DEFAULT_FRACTIONS if fractions is None else fractions
  shares = ', '.join(f'{percent(f / sum(fractions))} {s}' for f, s in zip(fractions, SPLITS))
  return f'classes split at random (fixed seed): {shares}'
