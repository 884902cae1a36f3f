"""From a `Config` to the pieces of an experiment: source, model, learner."""

import jax
import jax.numpy as jnp

from metajax import algorithms, precision
from metajax.config import Config
from metajax.data import accuracy, cross_entropy, make_source
from metajax.data.sinusoid import mse
from metajax.learner import MetaLearner
from metajax.models import MLP, Conv4, ResNet12
from metajax.types import Split, Task

IMAGE_SHAPES = {'omniglot': (28, 28, 1), 'miniimagenet': (84, 84, 3)}


def objective(config: Config):
  """(loss_fn, metric_fn, metric name) of the dataset's tasks."""
  if config.dataset == 'sinusoid':
    return mse, mse, 'mse'
  return cross_entropy, accuracy, 'accuracy'


def make_model(config: Config):
  if config.model_name == 'mlp':
    return MLP(hidden=config.hidden, out=1)
  if config.model_name == 'conv4':
    return Conv4(out=config.num_ways, channels=(config.num_channels,) * 4)
  if config.model_name == 'resnet12':
    return ResNet12(out=config.num_ways)
  raise ValueError(f'--model={config.model!r} is not known')


def make_learner(config: Config) -> MetaLearner:
  learner = algorithms.make(
      config.algorithm, make_model(config), objective(config)[0],
      inner_lr=config.inner_lr, inner_steps=config.inner_steps,
      inner_optimizer=config.inner_optimizer, remat=config.remat,
      backprop_steps=config.backprop_steps, imaml_lambda=config.imaml_lambda,
      cg_steps=config.cg_steps, predictor_head=config.predictor_head,
      finetune_head=config.finetune_head, num_classes=config.pretrain_classes)
  return precision.with_compute_dtype(learner, precision.DTYPES[config.compute_dtype])


def task_chunk(config: Config) -> int:
  """Tasks vmapped together in a meta-step (`--task_chunk`, 0: chosen here).

  On a CPU, convolutional models run fastest one task at a time inside a
  `lax.scan` (measured in the README: a vmap over 32 Omniglot tasks is 1.7x
  slower and takes 6x the memory); the MLP of sinusoid regression, and every
  model on an accelerator, run fastest with the whole meta-batch in one vmap.
  """
  if config.task_chunk:
    return config.task_chunk
  if config.model_name != 'mlp' and jax.default_backend() == 'cpu':
    return jax.device_count()  # one task per device per scan iteration
  return config.meta_batch_size


def example_task(config: Config) -> Task:
  """A task of the right shapes (zeros), to initialise or restore parameters."""
  if config.dataset == 'sinusoid':
    x = jnp.zeros((config.shots, 1))
    return Task(Split(x, x), Split(x, x))
  n = config.num_ways * config.shots
  shape = IMAGE_SHAPES[config.dataset]
  labels = jnp.zeros((n,), jnp.int32)
  return Task(Split(jnp.zeros((n,) + shape), labels), Split(jnp.zeros((n,) + shape), labels))


def resolve(config: Config, source) -> Config:
  """`config` with the settings that come from the data filled in.

  Fine-tuning's pre-training head has one output per class of the training
  split (`--pretrain_classes`); the run's config.json records the number, so a
  trained run loads without its data.
  """
  if config.algorithm == 'finetune' and config.pretrain_classes is None:
    config = config.replace(pretrain_classes=source.num_train_classes)
  return config


def build(config: Config, show_progress: bool = True):
  """(source, learner) for a validated config (`resolve`d against the data)."""
  source = make_source(config, show_progress)
  return source, make_learner(resolve(config, source))
