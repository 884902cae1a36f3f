"""What a class-based source read, split by split, in plain words.

A `Catalog` holds, for each split ('train', 'val', 'test'), the class names in
the order the split's sampler numbers them, the number of images, a
fingerprint of the split's files and notes on what the image pipeline did to
them (conversions, resizes, skipped files); and notes on the whole source (how
the classes were split, class folders without images). Sources built from it
(`episodes.EpisodeSource`) answer `summary()`, `class_names(split)` and
`split_fingerprint(split)` (`metajax.data.source.DataSummary`, `ClassSplits`).
Each split is described on first use, so a split that is never asked about is
never read.
"""

import hashlib
from typing import Callable, Iterable, NamedTuple, Sequence

SPLITS = ('train', 'val', 'test')
LISTED = 10  # names written out in a listing before "and N more"


def count(n: int, word: str, plural: str = '') -> str:
  """'1 file', '2 files', '3 classes': `n` and the word, singular or plural."""
  if n == 1:
    return f'1 {word}'
  return f'{n} {plural or (word + "es" if word.endswith(("s", "sh", "ch", "x")) else word + "s")}'


def listing(names: Sequence[str], limit: int = LISTED, quote: bool = False) -> str:
  """'a, b, c' or, past `limit` names, 'a, b, ... and 12 more'."""
  shown = [repr(n) if quote else str(n) for n in names[:limit]]
  rest = len(names) - len(shown)
  return ', '.join(shown) + (f' and {rest} more' if rest > 0 else '')


def percent(share: float) -> str:
  """0.6 -> '60%', 0.125 -> '12.5%'."""
  return f'{round(100 * share, 1):g}%'


def fingerprint(entries: Iterable[tuple[str, int]]) -> str:
  """sha256 of the sorted (relative path, size in bytes) of a split's files."""
  digest = hashlib.sha256()
  for path, size in sorted(entries):
    digest.update(f'{path}\t{size}\n'.encode())
  return digest.hexdigest()


class SplitInfo(NamedTuple):
  """One split as read.

  Attributes:
    classes: class names, in the order of the split's sampler (class i of
      its labelled batches is `classes[i]`).
    images: images in the split's classes.
    fingerprint: sha256 of its files (`fingerprint`), or of its pixels for
      sources that hold no files.
    notes: what was done to its images (conversions, resizes, skipped files).
    detail: a word on the classes, e.g. '1100 characters, each at 4 rotations'.
  """
  classes: list[str]
  images: int
  fingerprint: str
  notes: tuple[str, ...] = ()
  detail: str = ''


class Catalog:
  """The splits of a class-based source, described on first use.

  Args:
    title: the source, e.g. 'folders:/data/birds'.
    shape: the shape of one example after conversion, e.g. (28, 28, 1).
    split_info: `(split) -> SplitInfo`.
    notes: lines on the whole source (the class split, empty class folders).
  """

  def __init__(self, title: str, shape: tuple[int, ...],
               split_info: Callable[[str], SplitInfo], notes: Sequence[str] = ()):
    self.title, self.shape, self.notes = title, tuple(shape), tuple(notes)
    self._split_info, self._splits = split_info, {}

  def split(self, split: str) -> SplitInfo:
    """The `SplitInfo` of `split` ('train', 'val' or 'test')."""
    if split not in SPLITS:
      raise ValueError(f'split={split!r}: choose one of {", ".join(SPLITS)}')
    if split not in self._splits:
      self._splits[split] = self._split_info(split)
    return self._splits[split]

  def class_names(self, split: str) -> list[str]:
    return list(self.split(split).classes)

  def split_fingerprint(self, split: str) -> str:
    return self.split(split).fingerprint

  def summary(self) -> str:
    """Several lines: each split's classes, images and example shape, then what was done."""
    shape = 'x'.join(map(str, self.shape))
    lines = [f'Data: {self.title}']
    for name in SPLITS:
      info = self.split(name)
      detail = f' ({info.detail})' if info.detail else ''
      lines.append(f'  {name}: {count(len(info.classes), "class")}{detail}, '
                   f'{count(info.images, "image")}, each example {shape} after conversion')
      lines += [f'    {note}' for note in info.notes]
    lines += [f'  {note}' for note in self.notes]
    return '\n'.join(lines)
