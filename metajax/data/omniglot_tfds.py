"""Omniglot from tensorflow-datasets' `omniglot`, prepared as the official release is."""

from typing import Optional

import numpy as np
import tqdm

from metajax.data import images as images_lib
from metajax.data.catalog import count
from metajax.data.omniglot_download import IMAGES_PER_CHARACTER, Omniglot, conversion


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
  decoder = images_lib.Decoder(conversion(size))
  try:
    alphabets = tfds.builder('omniglot', data_dir=data_dir).info.features['alphabet'].names
    characters, images, order = [], [], []
    for image_set, split in (('background', 'train'), ('evaluation', 'test')):
      source = tfds.data_source('omniglot', split=split, data_dir=data_dir, download=False)
      drawings: dict[str, list[tuple[int, np.ndarray]]] = {}
      for i in tqdm.trange(len(source), desc=f'omniglot tfds {split}',
                           disable=not show_progress, mininterval=2):
        example = source[i]
        name = (f'{image_set}/{alphabets[int(example["alphabet"])]}/'
                f'character{int(example["alphabet_char_id"]) + 1:02d}')
        row = len(decoder)  # this drawing's row of the decoder's provenance
        drawings.setdefault(name, []).append((row, decoder(np.asarray(example['image']))[..., 0]))
      for name in sorted(drawings):
        if len(drawings[name]) != IMAGES_PER_CHARACTER:
          raise ValueError(f'tfds omniglot {split}: {name} has '
                           f'{count(len(drawings[name]), "drawing")}, expected '
                           f'{IMAGES_PER_CHARACTER}')
        characters.append(name)
        images.append(np.stack([a for _, a in drawings[name]]))
      order += [row for name in sorted(drawings) for row, _ in drawings[name]]
  except (tfds.core.registered.DatasetNotFoundError, AssertionError, OSError) as e:
    raise FileNotFoundError(
        f'tensorflow-datasets has no prepared omniglot in data_dir={data_dir} ({e}); '
        'prepare it with tfds (`tfds build omniglot`) or use data_source=files') from e
  return Omniglot(np.stack(images), characters, 'tfds', decoder.provenance().take(np.array(order)))
