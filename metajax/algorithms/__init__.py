"""Meta-learning algorithms, one factory per algorithm, and a registry by name."""

from typing import Callable

from metajax.algorithms.maml import anil, fomaml, maml, metasgd
from metajax.algorithms.pretrained import pretrained
from metajax.algorithms.protonet import protonet
from metajax.algorithms.reptile import reptile
from metajax.learner import MetaLearner

ALGORITHMS: dict[str, Callable[..., MetaLearner]] = {
    'maml': maml,
    'fomaml': fomaml,
    'reptile': reptile,
    'anil': anil,
    'metasgd': metasgd,
    'pretrained': pretrained,
    'protonet': protonet,
}


def make(name: str, model, loss_fn, **kwargs) -> MetaLearner:
  """The learner called `name`, built with the factory's keyword arguments."""
  if name not in ALGORITHMS:
    raise ValueError(f'--algorithm={name!r} is not known; choose one of '
                     f'{", ".join(ALGORITHMS)}')
  return ALGORITHMS[name](model, loss_fn, **kwargs)


__all__ = ['ALGORITHMS', 'make', 'maml', 'fomaml', 'anil', 'metasgd',
           'reptile', 'pretrained', 'protonet']
