"""From a `Config` to the pieces of an experiment: source, model, learner."""

from metajax import algorithms
from metajax.config import Config
from metajax.data import make_source
from metajax.learner import MetaLearner
from metajax.models import MLP


def make_model(config: Config, source):
  if config.dataset == 'sinusoid':
    return MLP(hidden=config.hidden, out=source.output_size)
  raise ValueError(f'--dataset={config.dataset!r} has no model')


def make_learner(config: Config, source) -> MetaLearner:
  return algorithms.make(
      config.algorithm, make_model(config, source), source.loss_fn,
      inner_lr=config.inner_lr, inner_steps=config.inner_steps,
      inner_optimizer=config.inner_optimizer, remat=config.remat)


def build(config: Config):
  """(source, learner) for a validated config."""
  source = make_source(config)
  return source, make_learner(config, source)
