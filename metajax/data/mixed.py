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

import numpy as np

from metajax.data import episodes, registry, variable
from metajax.types import Task


def parse(name: str) -> list[str]:
  parts = [p.strip() for p in name.split(',')]
  if any(not p for p in parts) or len(set(parts)) != len(parts):
    raise ValueError(f'dataset={name!r}: name each source once, comma-separated, '
                     'e.g. omniglot,folders:DIR')
  return parts


def part_config(config, part: str, shape=None):
  """The config of one source of a mixed run (images of `shape`, if it can be resized)."""
  spec = registry.get(part)
  reset = {name: None for name in registry.DATA_SETTINGS if name not in spec.settings}
  reset['skip_unreadable'] = config.skip_unreadable and 'skip_unreadable' in spec.settings
  if shape is not None and 'image_size' in spec.settings:
    reset.update(image_size=shape[0], image_channels=shape[-1])
  return config.replace(dataset=part, data_dir=None, split=None, **reset)


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


def spec(name: str) -> registry.DatasetSpec:
  """The `DatasetSpec` of a mixed `--dataset`."""
  parts = parse(name)
  specs = {p: registry.get(p) for p in parts}
  not_images = [p for p, s in specs.items() if s.task != 'classification']
  if not_images:
    raise ValueError(f'dataset={name!r}: {not_images[0]} has no classes to mix')
  fixed = [s.shape(None) for s in specs.values() if not callable(s.input_shape)]

  def input_shape(config):
    if fixed:
      return fixed[0]
    size = config.image_size or 84
    return (size, size, config.image_channels or 3)

  def make_source(config, show_progress=True):
    shape = fixed[0] if fixed else (
        (config.image_size, config.image_size, config.image_channels)
        if config.image_size and config.image_channels else None)
    sources = {}
    for part, part_spec in specs.items():
      source = part_spec.make_source(part_config(config, part, shape), show_progress)
      shape = shape or _shape(source)
      if _shape(source) != tuple(shape):
        raise ValueError(f'dataset={name!r}: {part} gives images of shape {_shape(source)}, '
                         f'the others {tuple(shape)}; mix sources of one image shape')
      sources[part] = source
    return MixedSource(sources, config.meta_batch_size, config.seed)

  def check(config):
    if config.data_dir is not None:
      raise ValueError(f'--data_dir={config.data_dir}: a run of several sources reads each '
                       'from its own folder (folders:DIR names its folder)')
    if config.spec.from_data:
      raise ValueError(f'--algorithm={config.algorithm}: pre-training on mixed sources is not '
                       'available; train it on one source')
    for part, part_spec in specs.items():
      if part_spec.check is not None:
        part_spec.check(part_config(config, part, fixed[0] if fixed else None))

  settings = tuple(sorted({s for p in specs.values() for s in p.settings}))
  models = tuple(m for m in next(iter(specs.values())).models
                 if all(m in s.models for s in specs.values()))
  return dataclasses.replace(
      next(iter(specs.values())), name=name, input_shape=input_shape, make_source=make_source,
      check=check, settings=settings, models=models, sources=('files',), class_splits=(),
      default_data_dir=None, with_argument=None,
      from_data={'image_size': 'image_size', 'image_channels': 'channels'})
