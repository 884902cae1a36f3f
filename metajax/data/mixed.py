"""Several datasets in one run: `--dataset=omniglot,folders:DIR,tfds:dtd`.

Each training episode comes from one source, the source drawn uniformly
(as in Meta-Dataset); held-out evaluation reports every source on its own
test classes. All sources must give images of one shape: sources that can
be resized (class folders, tfds) take the size and channels of the first
fixed-size source (Omniglot 28x28x1, miniImageNet 84x84x3), or of
`--image_size` / `--image_channels`, or else of the first source as found.
Each source reads its own default folder (`folders:DIR` names its own);
`--data_dir` is for single-source runs.
"""

import dataclasses
import hashlib
from typing import Optional

import numpy as np

from metajax import settings as settings_lib
from metajax.data import episodes, registry, variable
from metajax.settings import setting
from metajax.types import Task


def parse(name: str) -> list[str]:
  parts = [p.strip() for p in name.split(',')]
  if any(not p for p in parts) or len(set(parts)) != len(parts):
    raise ValueError(f'dataset={name!r}: name each source once, comma-separated, '
                     'e.g. omniglot,folders:DIR')
  return parts


def part_settings(settings, part: str, shape=None):
  """The settings of one source of a mixed run: its defaults, images of `shape` if it can resize."""
  spec = registry.get(part)
  names = settings_lib.names(spec.settings)
  values = {k: v for k, v in spec.defaults.items() if k in names}
  if 'skip_unreadable' in names:
    values['skip_unreadable'] = settings.skip_unreadable
  if shape is not None and 'image_size' in names:
    values.update(image_size=shape[0], image_channels=shape[-1])
  built = spec.settings(**values)
  return built.resolved() if hasattr(built, 'resolved') else built


def _shape(source) -> tuple[int, int, int]:
  """(size, size, channels) of a source's images."""
  images = getattr(source.train, 'base', source.train).images
  return tuple(images.shape[1:3]) + ((images.shape[3] if images.ndim == 4 else 1),)


class MixedSampler:
  """Episodes of several samplers; each episode's sampler drawn uniformly."""

  def __init__(self, samplers, seed: int):
    self.samplers, self.seed = samplers, seed
    self.shapes = sorted({s for sampler in samplers for s in getattr(sampler, 'shapes', [])})
    self.classes = np.concatenate([s.classes for s in samplers])

  def batch(self, index: int, num_tasks: int, first: int = 0) -> Task:
    tasks = []
    for i in range(num_tasks):
      rng = np.random.default_rng([self.seed, index, first + i])
      tasks.append(self.samplers[int(rng.integers(len(self.samplers)))].episode(rng))
    return variable.stack_padded(tasks)


class MixedSource(episodes.EpisodeSource):
  """Training episodes from every source; held-out tasks per source (`parts`)."""

  def __init__(self, parts: dict, batch_size: int, seed: int):
    super().__init__(MixedSampler([s.train for s in parts.values()], seed), {}, batch_size,
                     eval_images=0)
    self.parts = parts
    self.image_size, _, self.channels = _shape(next(iter(parts.values())))

  def eval_batches(self, split: str, num_tasks: int):
    """Held-out tasks of every source in turn (`Run.evaluate` scores each source alone)."""
    for source in self.parts.values():
      yield from source.eval_batches(split, num_tasks)

  def summary(self) -> str:
    """Each source's summary, indented under one line."""
    lines = [f'Data: {len(self.parts)} sources; each training episode from one of them, drawn '
             'uniformly']
    for source in self.parts.values():
      part = source.summary().splitlines()
      lines += ['  ' + part[0].removeprefix('Data: ')] + ['  ' + line for line in part[1:]]
    return '\n'.join(lines)

  def class_names(self, split: str) -> list[str]:
    """'<source>:<class>' of every source's classes of `split`, source by source."""
    return [f'{part}:{name}' for part, source in self.parts.items()
            for name in source.class_names(split)]

  def split_fingerprint(self, split: str) -> str:
    """sha256 of the sources' names and split fingerprints."""
    digest = hashlib.sha256()
    for part, source in self.parts.items():
      digest.update(f'{part}\t{source.split_fingerprint(split)}\n'.encode())
    return digest.hexdigest()


def spec(name: str) -> registry.DatasetSpec:
  """The `DatasetSpec` of a mixed `--dataset`."""
  parts = parse(name)
  specs = {p: registry.get(p) for p in parts}
  not_images = [p for p, s in specs.items() if s.task != 'classification']
  if not_images:
    raise ValueError(f'dataset={name!r}: {not_images[0]} has no classes to mix')
  fixed = [s.shape(None) for s in specs.values() if not callable(s.input_shape)]

  def input_shape(settings):
    if fixed:
      return fixed[0]
    size = settings.image_size or 84
    return (size, size, settings.image_channels or 3)

  def make_source(settings, episodes_spec, show_progress=True):
    shape = fixed[0] if fixed else (
        (settings.image_size, settings.image_size, settings.image_channels)
        if settings.image_size and settings.image_channels else None)
    sources = {}
    for part, part_spec in specs.items():
      source = part_spec.make_source(part_settings(settings, part, shape), episodes_spec,
                                     show_progress)
      shape = shape or _shape(source)
      if _shape(source) != tuple(shape):
        raise ValueError(f'dataset={name!r}: {part} gives images of shape {_shape(source)}, '
                         f'the others {tuple(shape)}; mix sources of one image shape')
      sources[part] = source
    return MixedSource(sources, episodes_spec.batch_size, episodes_spec.seed)

  def check(settings):
    for part, part_spec in specs.items():
      if part_spec.check is not None:
        part_spec.check(part_settings(settings, part, fixed[0] if fixed else None))

  models = tuple(m for m in next(iter(specs.values())).models
                 if all(m in s.models for s in specs.values()))
  first = next(iter(specs.values()))
  return dataclasses.replace(
      first, name=name, input_shape=input_shape, make_source=make_source, check=check,
      settings=MixedSettings, models=models, default_data_dir=None, with_argument=None,
      defaults={k: v for k, v in first.defaults.items()
                if k not in settings_lib.names(first.settings)},
      from_data={'image_size': 'image_size', 'image_channels': 'channels'})


@dataclasses.dataclass(frozen=True)
class MixedSettings(settings_lib.Section):
  """Several sources: each reads its own default folder (`folders:DIR` names its own)."""
  image_size: Optional[int] = setting(None, 'side of the square images of sources that can '
                                      'be resized (default: the first fixed-size source\'s)',
                                      minimum=8)
  image_channels: Optional[int] = setting(None, '1 (grayscale) or 3 (RGB) (default: as above)',
                                          choices=(1, 3))
  skip_unreadable: bool = setting(False, 'class folders: leave out files that Pillow cannot '
                                  'read')


registry.register_mixer(spec)
