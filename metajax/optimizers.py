"""Optimizer flags as optax objects: the one place where their strings are read.

`--inner_optimizer` names a transformation built at a learning rate (the
algorithm chooses which rate: Meta-SGD builds it at 1.0 and meta-learns the
rates); `--meta_optimizer` names any optax optimizer taking a learning rate.
"""

import inspect
from typing import Callable

import optax

# Adam gets eps_root > 0 so that it can be differentiated through (see metajax.inner).
INNER_OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    'sgd': optax.sgd,
    'momentum': lambda lr: optax.sgd(lr, momentum=0.9),
    'adam': lambda lr: optax.adam(lr, eps_root=1e-12),
}


def learning_rate(config):
  """--meta_lr, or its cosine decay to --min_meta_lr over --num_steps (optax).

  `cosine`: from --meta_lr at step 0 (MAML++'s annealing); `warmup_cosine`:
  after a linear warm-up from 0 over --warmup_steps.
  """
  if config.lr_schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.meta_lr, warmup_steps=config.warmup_steps,
        decay_steps=config.num_steps, end_value=config.min_meta_lr)
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.meta_lr, config.num_steps,
                                       alpha=config.min_meta_lr / config.meta_lr)
  return config.meta_lr


def meta_optimizer(config) -> optax.GradientTransformation:
  """`optax.<meta_optimizer>(learning_rate(config))`: any optax optimizer taking a learning rate."""
  factory = getattr(optax, config.meta_optimizer, None)
  takes_lr = False
  if callable(factory) and not config.meta_optimizer.startswith('_'):
    try:
      takes_lr = 'learning_rate' in inspect.signature(factory).parameters
    except (TypeError, ValueError):
      takes_lr = False
  if not takes_lr:
    raise ValueError(
        f'--meta_optimizer={config.meta_optimizer!r}: not an optax optimizer '
        'with a learning_rate (e.g. adam, sgd, adamw, rmsprop, lamb)')
  return factory(learning_rate(config))
