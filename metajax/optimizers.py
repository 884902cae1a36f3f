"""The meta-optimizer of a run as an optax object: the one place where its name is read.

`--meta_optimizer` names any optax optimizer taking a learning rate;
`--lr_schedule` shapes that rate. (The inner optimizers, which algorithms
differentiate through, are in `metajax.algorithms.registry`.)
"""

import inspect

import optax


def check_meta_optimizer(name: str):
  """`optax.<name>`, or ValueError naming `--meta_optimizer` if it takes no learning rate."""
  factory = getattr(optax, name, None)
  takes_lr = False
  if callable(factory) and not name.startswith('_'):
    try:
      takes_lr = 'learning_rate' in inspect.signature(factory).parameters
    except (TypeError, ValueError):
      takes_lr = False
  if not takes_lr:
    raise ValueError(
        f'--meta_optimizer={name!r}: not an optax optimizer '
        'with a learning_rate (e.g. adam, sgd, adamw, rmsprop, lamb)')
  return factory


def learning_rate(run):
  """--meta_lr, or its cosine decay to --min_meta_lr over --num_steps (optax).

  `run` is a run's `RunSettings`. `cosine`: from --meta_lr at step 0 (MAML++'s
  annealing); `warmup_cosine`: after a linear warm-up from 0 over --warmup_steps.
  """
  if run.lr_schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=run.meta_lr, warmup_steps=run.warmup_steps,
        decay_steps=run.num_steps, end_value=run.min_meta_lr)
  if run.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(run.meta_lr, run.num_steps,
                                       alpha=run.min_meta_lr / run.meta_lr)
  return run.meta_lr


def meta_optimizer(run) -> optax.GradientTransformation:
  """`optax.<meta_optimizer>(learning_rate(run))` of a run's `RunSettings`."""
  return check_meta_optimizer(run.meta_optimizer)(learning_rate(run))
