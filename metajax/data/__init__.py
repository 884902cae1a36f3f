"""Task sources, one module per dataset, each registering a `DatasetSpec`.

A source gives deterministic batches of tasks: `batches(start, stop)` yields
the meta-batches of those steps, each a function of the seed and the step
alone, so a resumed run sees the same tasks as an uninterrupted one;
`eval_batches(split, n)` yields n held-out tasks in chunks, the same for every
run whatever its training seed, so that runs compare on equal tasks.
Class-based image sources (`episodes.EpisodeSource`) also give
`supervised_batches(start, stop)`: images and class indices for pre-training.
"""
# pylint: disable=g-bad-import-order

from metajax.data import registry
from metajax.data.registry import DATASETS, DatasetSpec
from metajax.data import sinusoid, omniglot, miniimagenet, folders, tfds_source  # each registers its spec
from metajax.data import mixed  # several of them in one run
from metajax.losses import accuracy, cross_entropy

__all__ = ['DATASETS', 'DatasetSpec', 'accuracy', 'cross_entropy', 'folders', 'miniimagenet', 'omniglot', 'tfds_source',
           'registry', 'sinusoid']
