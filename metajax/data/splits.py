"""Class splits of Omniglot: which (character, rotation) classes each split holds.

- `vinyals`: 1100 characters for meta-training, 100 for validation and 423 for
  meta-testing, from one fixed permutation of all 1623 characters stored in
  `splits/omniglot_vinyals.json` with its sha256 (see the file's description);
  rotations by 0/90/180/270 degrees make four classes of each character, in
  every split (Vinyals et al. 2016; Ravi & Larochelle 2017 for validation).
- `lake`: the background set for meta-training, less 5 of its alphabets held
  out for validation (drawn with `RandomState(0)` among the background
  alphabets of at least 20 characters, so that 20-way episodes within one of
  them exist), and the evaluation set for meta-testing (Lake et al. 2015); no
  rotations unless asked for.
"""

import hashlib
import json
import os

import numpy as np

SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'splits',
                          'omniglot_vinyals.json')
SUBSETS = ('train', 'val', 'test')


def vinyals_characters() -> dict[str, list[str]]:
  """The Vinyals split's character names, checked against the stored hash."""
  with open(SPLIT_FILE) as f:
    stored = json.load(f)
  split = {k: stored[k] for k in SUBSETS}
  digest = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
  if digest != stored['sha256']:
    raise ValueError(f'{SPLIT_FILE} does not match its sha256: the split was altered')
  return split


LAKE_VAL_ALPHABETS = 5
LAKE_VAL_MIN_CHARACTERS = 20


def alphabet(character: str) -> str:
  """'<set>/<Alphabet>' of a character named '<set>/<Alphabet>/characterNN'."""
  return character.rsplit('/', 1)[0]


def lake_val_alphabets(characters: list[str]) -> list[str]:
  """The background alphabets the `lake` split holds out for validation, sorted."""
  sizes: dict[str, int] = {}
  for c in characters:
    if c.startswith('background/'):
      sizes[alphabet(c)] = sizes.get(alphabet(c), 0) + 1
  eligible = sorted(a for a, n in sizes.items() if n >= LAKE_VAL_MIN_CHARACTERS)
  order = np.random.RandomState(0).permutation(len(eligible))[:LAKE_VAL_ALPHABETS]
  return sorted(eligible[i] for i in order)


def lake_characters(characters: list[str]) -> dict[str, list[str]]:
  background = [c for c in characters if c.startswith('background/')]
  held = set(lake_val_alphabets(characters))
  return {'train': [c for c in background if alphabet(c) not in held],
          'val': [c for c in background if alphabet(c) in held],
          'test': [c for c in characters if c.startswith('evaluation/')]}


def classes(characters: list[str], split: str, subset: str, rotations: bool) -> np.ndarray:
  """int [num_classes, 2]: (index into `characters`, quarter turns) per class."""
  if split == 'vinyals':
    names = vinyals_characters()[subset]
  elif split == 'lake':
    names = lake_characters(characters)[subset]
  else:
    raise ValueError(f'split={split!r}: choose one of vinyals, lake')
  index = {c: i for i, c in enumerate(characters)}
  missing = [n for n in names if n not in index]
  if missing:
    raise ValueError(f'the {split} split names characters that the data lacks, e.g. {missing[0]}')
  chars = np.array(sorted(index[n] for n in names), dtype=np.int64)
  turns = np.arange(4) if rotations else np.zeros(1, np.int64)
  return np.stack(np.meshgrid(chars, turns, indexing='ij'), -1).reshape(-1, 2)
