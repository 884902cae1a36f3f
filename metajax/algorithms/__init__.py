"""Meta-learning algorithms, one factory per algorithm, and a registry by name."""

import inspect
from typing import Callable

from metajax.algorithms.finetune import finetune
from metajax.algorithms.imaml import imaml
from metajax.algorithms.maml import anil, fomaml, maml, metasgd
from metajax.algorithms.predictor import predictor
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
    'imaml': imaml,
    'pretrained': pretrained,
    'protonet': protonet,
    'predictor': predictor,
    'finetune': finetune,
}


def make(name: str, model, loss_fn, **kwargs) -> MetaLearner:
  """The learner called `name`, built with the factory's keyword arguments.

  Keyword arguments that the factory does not take are dropped, so that one
  call can pass every algorithm setting of a config (`Config.validate`
  refuses settings that an algorithm would ignore).
  """
  if name not in ALGORITHMS:
    raise ValueError(f'--algorithm={name!r} is not known; choose one of '
                     f'{", ".join(ALGORITHMS)}')
  factory = ALGORITHMS[name]
  parameters = inspect.signature(factory).parameters
  if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
    kwargs = {k: v for k, v in kwargs.items() if k in parameters}
  return factory(model, loss_fn, **kwargs)


__all__ = ['ALGORITHMS', 'make', 'maml', 'fomaml', 'anil', 'metasgd', 'imaml',
           'reptile', 'pretrained', 'protonet', 'predictor', 'finetune']
