"""Any image-classification dataset of tensorflow-datasets as a few-shot source.

`--dataset=tfds:NAME` (`tfds:cifar100`, `tfds:caltech_birds2011`,
`tfds:oxford_flowers102`, `tfds:dtd`, ...) reads every split of a prepared
tfds dataset with `tfds.data_source` from `--data_dir` (tfds' folder; default
`~/tensorflow_datasets`; nothing is downloaded), pools the examples by their
`label` and splits the classes, not the examples, into train / val / test:

- `tfds:cifar100 --split=cifar_fs`: CIFAR-FS (Bertinetto et al. 2019), 64 / 16
  / 20 classes, the published lists (the default for cifar100);
- `tfds:cifar100 --split=fc100`: FC100 (Oreshkin et al. 2018), by superclass,
  12 / 4 / 4 superclasses of 5 classes;
- any dataset, `--split=random`: a seeded split by `--split_fractions`.

Images are resized to `--image_size` squares (default: the dataset's own
size if square, else 84) and kept grayscale or RGB as stored (or forced by
`--image_channels`), then cached outside the data folder like class folders.
"""

import dataclasses
import hashlib
import os
from typing import Optional

import numpy as np
import tqdm

from metajax import settings as settings_lib
from metajax.data import class_images, images as images_lib, registry
from metajax.data.class_split import DEFAULT_FRACTIONS, seeded_note, seeded_split
from metajax.settings import setting

CIFAR_FS = {  # Bertinetto et al. 2019; train: the other 64 classes
    'val': ['beaver', 'otter', 'flatfish', 'shark', 'lamp', 'television', 'beetle', 'butterfly',
            'sea', 'camel', 'cattle', 'crab', 'crocodile', 'maple_tree', 'motorcycle',
            'tractor'],
    'test': ['whale', 'poppy', 'rose', 'sweet_pepper', 'telephone', 'bed', 'table', 'wardrobe',
             'leopard', 'plain', 'chimpanzee', 'fox', 'snail', 'worm', 'baby', 'man', 'woman',
             'bicycle', 'pickup_truck', 'rocket'],
}
FC100 = {  # Oreshkin et al. 2018, superclasses; train: the other 12
    'val': ['large_carnivores', 'large_omnivores_and_herbivores', 'non-insect_invertebrates',
            'small_mammals'],
    'test': ['aquatic_mammals', 'insects', 'medium_mammals', 'people'],
}
CLASS_SPLITS = {'cifar100': ('cifar_fs', 'fc100', 'random')}
SPLIT_NAMES = {'cifar_fs': 'CIFAR-FS (Bertinetto et al. 2019): 64 / 16 / 20 classes',
               'fc100': 'FC100 (Oreshkin et al. 2018): 12 / 4 / 4 superclasses'}


def load(name: str, data_dir: Optional[str] = None, image_size: Optional[int] = None,
         channels: Optional[int] = None, show_progress: bool = True):
  """(`class_images.ClassImages` of every class, superclass name per class or None)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    info = tfds.builder(name, data_dir=data_dir).info
    splits = list(info.splits) or ['train', 'test']
    sources = [tfds.data_source(name, split=s, data_dir=data_dir, download=False) for s in splits]
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, OSError, ValueError) as e:
    raise FileNotFoundError(f'tensorflow-datasets has no prepared {name} in data_dir={data_dir} '
                            f'({type(e).__name__}: {e}); prepare it with `tfds build {name}`'
                            ) from e
  features = info.features
  if 'label' not in features or 'image' not in features:
    raise ValueError(f'dataset=tfds:{name}: not an image-classification dataset (its features '
                     f'are {", ".join(features)}; few-shot sources need image and label)')
  names = list(features['label'].names)
  shape = features['image'].shape
  stored = 1 if shape[-1] == 1 else 3
  channels = channels or stored
  size = image_size or (shape[0] if shape[0] and shape[0] == shape[1] else 84)
  key = hashlib.sha256(repr((name, str(info.version), os.path.abspath(data_dir or '~'),
                             [len(s) for s in sources], size, channels)).encode()).hexdigest()
  path = images_lib.cache_file(f'tfds_{name}', key)
  cached = images_lib.read_cache(path, key)
  if cached is not None:
    arrays, meta = cached
    return (class_images.ClassImages(arrays['images'], arrays['counts'], meta['classes'], [],
                                provenance=images_lib.Provenance.from_arrays(arrays),
                                conversion=images_lib.Conversion(**meta['conversion'])),
            meta['superclasses'])
  coarse = list(features['coarse_label'].names) if 'coarse_label' in features else None
  decoder = images_lib.Decoder(images_lib.Conversion.of(channels, size))
  by_class, superclass = {}, {}
  for split, source in zip(splits, sources):
    for i in tqdm.trange(len(source), desc=f'tfds {name} {split}', disable=not show_progress,
                         mininterval=2):
      example = source[i]
      row = len(decoder)  # this image's row of the decoder's provenance
      label = int(example['label'])
      by_class.setdefault(label, []).append((row, decoder(np.asarray(example['image']))))
      if coarse is not None:
        superclass[label] = coarse[int(example['coarse_label'])]
  labels = sorted(by_class)
  order = np.array([row for l in labels for row, _ in by_class[l]])
  data = class_images.ClassImages(np.stack([a for l in labels for _, a in by_class[l]]),
                             np.array([len(by_class[l]) for l in labels]),
                             [names[l] for l in labels], [],
                             provenance=decoder.provenance().take(order),
                             conversion=decoder.conversion)
  supers = [superclass[l] for l in labels] if coarse is not None else None
  images_lib.write_cache(
      path, key, {'classes': data.classes, 'superclasses': supers,
                  'conversion': dataclasses.asdict(data.conversion)},
      images=data.images, counts=data.counts, **data.provenance.to_arrays())
  return data, supers


def class_split(name: str, split: str, classes: list[str], superclasses,
                fractions) -> dict[str, list[int]]:
  """{'train', 'val', 'test': indices into `classes`} of class split `split`."""
  if split == 'random':
    return seeded_split(len(classes), fractions)
  named, of = (CIFAR_FS, classes) if split == 'cifar_fs' else (FC100, superclasses)
  missing = sorted(set(named['val'] + named['test']) - set(of or ()))
  if missing:
    raise ValueError(f'split={split!r}: tfds:{name} has no class {missing[0]!r}; its '
                     f'{split} split names the classes of tfds cifar100')
  subsets = {s: [i for i, c in enumerate(of) if c in named[s]] for s in ('val', 'test')}
  held = set(subsets['val'] + subsets['test'])
  return {'train': [i for i in range(len(classes)) if i not in held], **subsets}


@dataclasses.dataclass(frozen=True)
class TfdsSettings(class_images.ImageSettings):
  data_dir: Optional[str] = setting(None, 'tfds\' data folder (default: ~/tensorflow_datasets)')
  split: str = setting('random', 'class split: random (by --split_fractions); tfds:cifar100 '
                       'also cifar_fs (CIFAR-FS) | fc100 (FC100)',
                       choices=('random', 'cifar_fs', 'fc100'))


def spec_for(name: str) -> registry.DatasetSpec:
  """The `DatasetSpec` of `--dataset=tfds:name`."""
  if not name:
    raise ValueError('--dataset=\'tfds\': name the tfds dataset, e.g. tfds:cifar100')
  splits = CLASS_SPLITS.get(name, ('random',))

  def make_source(settings, spec, show_progress=True):
    data, supers = load(name, settings.data_dir, settings.image_size, settings.image_channels,
                        show_progress)
    split = settings.split
    note = (seeded_note(settings.split_fractions) if split == 'random' else
            f'classes split as {SPLIT_NAMES[split]}')
    folder = settings.data_dir or '~/tensorflow_datasets'
    source = class_images.episode_source(
        spec, data, class_split(name, split, data.classes, supers, settings.split_fractions),
        f'tfds:{name} {split}', title=f'tfds:{name} from {folder}', notes=[note])
    source.split_fractions = (settings.split_fractions or DEFAULT_FRACTIONS
                              if split == 'random' else None)
    return source

  def check(settings):
    if settings.split not in splits:
      settings_lib.fail('split', settings.split, f'tfds:{name} has the class splits '
                        f'{", ".join(splits)}')

  return dataclasses.replace(
      SPEC, name=f'tfds:{name}', make_source=make_source, check=check, with_argument=None,
      defaults={**class_images.IMAGE_DEFAULTS, 'split': splits[0]})


def input_shape(settings) -> tuple[int, int, int]:
  size = settings.image_size or 84
  return (size, size, settings.image_channels or 3)


SPEC = registry.register(registry.DatasetSpec(
    name='tfds', task='classification', input_shape=input_shape,
    make_source=lambda settings, spec, show: spec_for('').make_source(settings, spec, show),
    check=lambda settings: spec_for(''),  # `tfds` alone names no dataset
    settings=TfdsSettings, defaults=class_images.IMAGE_DEFAULTS,
    prepare=class_images.prepare_images,
    from_data={'image_size': 'image_size', 'image_channels': 'channels',
               'split_fractions': 'split_fractions'},
    with_argument=spec_for))
