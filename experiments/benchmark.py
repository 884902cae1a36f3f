r"""Meta-training throughput: compile time, steps/s, tasks/s, peak memory.

Takes the same flags as train.py; prints one JSON object. Compile time is
that of the meta-step alone (ahead of time). Steps/s is the
median over `--windows` timed windows of `--window_steps` meta-steps each,
after warm-up, each window ended by `block_until_ready`. Task batches are
sampled before timing, so the figure is the compiled step alone.

  python experiments/benchmark.py                       # MAML on sinusoid
  python experiments/benchmark.py --algorithm=reptile --inner_steps=5
  python experiments/benchmark.py --synthetic_data --dataset=omniglot --ways=5 --shots=1 \
      --query=15 --meta_batch_size=32 --inner_lr=0.4 --windows=3 --window_steps=3
"""

import json
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from metajax import builders
from metajax import cli
from metajax import train
from metajax.config import meta_optimizer
from metajax.types import Split, Task

cli.define_config_flags()
flags.DEFINE_bool('synthetic_data', False,
                  'random tasks of the right shapes instead of the dataset (no files needed)')
flags.DEFINE_integer('windows', 5, 'timed windows')
flags.DEFINE_integer('window_steps', 200, 'meta-steps per window')
FLAGS = flags.FLAGS


class SyntheticSource:
  """Uniform random tasks with the shapes of `config`'s meta-batches."""

  def __init__(self, config):
    self.config = config
    self.example = builders.example_task(config)

  def train_batch(self, step: int):
    config, rng = self.config, np.random.default_rng(step)
    if config.dataset == 'sinusoid':
      shape = lambda n: (config.meta_batch_size, n, 1)
      draw = lambda n: (rng.uniform(-5, 5, shape(n)), rng.normal(size=shape(n)))
      (xs, ys), (xq, yq) = draw(config.shots), draw(config.num_query)
    else:
      image = self.example.support.x.shape[1:]
      if config.algorithm == 'finetune':
        sizes, classes = (config.meta_batch_size, 1), config.pretrain_classes
        batch = 1
      else:
        sizes, classes = (config.num_train_ways * config.shots,
                          config.num_train_ways * config.num_query), config.num_train_ways
        batch = config.meta_batch_size
      xs, xq = (rng.random((batch, n) + image) for n in sizes)
      ys, yq = (np.tile(np.arange(n) % classes, (batch, 1)) for n in sizes)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return Task(Split(f32(xs), jnp.asarray(ys) if config.dataset != 'sinusoid' else f32(ys)),
                Split(f32(xq), jnp.asarray(yq) if config.dataset != 'sinusoid' else f32(yq)))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    config = cli.config_from_flags(FLAGS)
  except ValueError as e:
    sys.exit(f'error: {e}')
  if FLAGS.synthetic_data:
    config = config.replace(pretrain_classes=config.pretrain_classes or 1000)
    learner = builders.make_learner(config)
    source = SyntheticSource(config)
  else:
    source, learner = builders.build(config)
  optimizer = meta_optimizer(config)
  state = train.create_train_state(learner, optimizer, jax.random.PRNGKey(config.seed),
                                   builders.example_task(config))
  step = train.make_meta_train_step(learner, optimizer,
                                    task_chunk=builders.task_chunk(config))
  batches = [source.train_batch(i) for i in range(FLAGS.window_steps)]
  keys = [jax.random.fold_in(state.rng, i) for i in range(FLAGS.window_steps)]

  start = time.perf_counter()
  step = step.lower(state, batches[0], keys[0]).compile()
  compile_s = time.perf_counter() - start
  memory = step.memory_analysis()
  temp_mb = memory.temp_size_in_bytes / 2 ** 20 if memory is not None else float('nan')

  rates = []
  for _ in range(FLAGS.windows + 1):  # the first window is warm-up
    start = time.perf_counter()
    for tasks, key in zip(batches, keys):
      state, metrics = step(state, tasks, key)
    jax.block_until_ready((state, metrics))
    rates.append(FLAGS.window_steps / (time.perf_counter() - start))
  steps_per_s = statistics.median(rates[1:])
  print(json.dumps({
      'algorithm': config.algorithm, 'dataset': config.dataset,
      'inner_steps': config.inner_steps, 'meta_batch_size': config.meta_batch_size,
      'task_chunk': builders.task_chunk(config),
      'backend': jax.default_backend(), 'devices': jax.device_count(),
      'steps_per_s': round(steps_per_s, 2),
      'tasks_per_s': round(steps_per_s * config.meta_batch_size, 1),
      'compile_s': round(compile_s, 2),
      'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      # XLA's buffers for one meta-step's intermediates (activations kept for
      # the backward pass, etc.), from the compiled step's memory analysis.
      'step_temp_mb': round(temp_mb, 1),
  }))


if __name__ == '__main__':
  app.run(main)
