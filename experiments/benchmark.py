r"""Meta-training throughput: compile time, steps/s, tasks/s, peak memory.

Takes the same flags as train.py; prints one JSON object. Compile time is
that of the meta-step alone (ahead of time). Steps/s is the
median over `--windows` timed windows of `--window_steps` meta-steps each,
after warm-up, each window ended by `block_until_ready`. Task batches are
sampled before timing, so the figure is the compiled step alone.

  python experiments/benchmark.py                       # MAML on sinusoid
  python experiments/benchmark.py --algorithm=reptile --inner_steps=5
  python experiments/benchmark.py --compare=learn2learn --synthetic_data ...
  python experiments/benchmark.py --synthetic_data --dataset=omniglot --ways=5 --shots=1 \
      --query=15 --meta_batch_size=32 --inner_lr=0.4 --windows=3 --window_steps=3

`--algorithms=maml,protonet,relation` times several algorithms under the same
flags, one child process each (so that each peak memory is its own), and
prints each one's JSON line, then a table. Learners that take any number of
ways train on the episodes they are tested on (`--train_ways` = `--ways`).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from metajax import cli
from metajax import hooks
from metajax import run as run_lib
from metajax.algorithms import ALGORITHMS
from metajax.types import Split, Task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import l2l_compare  # pylint: disable=g-import-not-at-top,wrong-import-position

cli.define_config_flags()
flags.DEFINE_bool('synthetic_data', False,
                  'random tasks of the right shapes instead of the dataset (no files needed)')
flags.DEFINE_enum('compare', '', ['', 'learn2learn'],
                  'also time the equivalent learn2learn configuration (maml, fomaml; '
                  'protonet: the PyTorch ProtoNet of learn2learn\'s example), '
                  'alternating windows with metajax\'s, in a child process')
flags.DEFINE_integer('windows', 5, 'timed windows')
flags.DEFINE_integer('window_steps', 200, 'meta-steps per window')
flags.DEFINE_list('algorithms', [], 'time each of these algorithms (comma-separated) in a child '
                  'process under the same flags and print a table (instead of --algorithm)')
FLAGS = flags.FLAGS


def torch_config(run) -> dict:
  """The learn2learn side's settings, from the same resolved Config."""
  config = run.config
  image = run.example_task().support.x.shape[1:]
  return {'model': config.model, 'hidden': list(config.get('hidden', ())),
          'channels': config.get('channels'), 'in_channels': image[-1] if len(image) == 3 else 1,
          'side': image[0], 'ways': config.ways, 'inner_lr': config.inner_lr,
          'inner_steps': config.inner_steps, 'meta_lr': config.meta_lr,
          'algorithm': config.algorithm}


class SyntheticSource:
  """Uniform random batches with the shapes of a run's training batches."""

  def __init__(self, run):
    self.run = run

  def train_batch(self, step: int):
    run, config, rng = self.run, self.run.config, np.random.default_rng(step)
    if run.supervised:  # one batch of --meta_batch_size images and class indices
      x = rng.random((config.meta_batch_size,) + config.data.shape(config))
      y = np.arange(config.meta_batch_size) % config.pretrain_classes
      return Split(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32))
    example = config.data.example_task(config.sections['dataset'], config.train_ways, config.shots)
    sizes = (example.support.x.shape[0],
             config.train_ways * config.query if config.data.task == 'classification'
             else config.query)

    def split(n, like: Split):
      x = rng.uniform(-1, 1, (config.meta_batch_size, n) + like.x.shape[1:])
      if config.data.task == 'classification':
        y = jnp.asarray(np.tile(np.arange(n) % config.train_ways, (config.meta_batch_size, 1)))
      else:
        y = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
      return Split(jnp.asarray(x, jnp.float32), y)

    return Task(split(sizes[0], example.support), split(sizes[1], example.query))


def _run_window(step_fn, state, batches, clock, compiled):
  """Steps 0..len(batches)-1 of the training loop's driver (the same keys every window)."""
  for _, state, metrics in hooks.steps(step_fn, state, batches, 0, len(batches), clock=clock,
                                       compiled=compiled):
    pass
  jax.block_until_ready((state, metrics))
  return state


def compare_algorithms(names: list[str]) -> None:
  """Runs this script once per algorithm in `names`; prints each JSON line, then a table."""
  unknown = [n for n in names if n not in ALGORITHMS]
  if unknown:
    sys.exit(f'error: --algorithms: no algorithm {", ".join(unknown)} (choose from '
             f'{", ".join(ALGORITHMS)})')
  same = [a for a in sys.argv[1:] if not a.startswith(('--algorithms', '--algorithm='))]
  rows = []
  for name in names:
    ways = [f'--train_ways={FLAGS.ways}'] if ALGORITHMS[name].any_ways and FLAGS.ways else []
    child = subprocess.run([sys.executable, os.path.abspath(__file__), *same,
                            f'--algorithm={name}', *ways], capture_output=True, text=True,
                           check=False)
    if child.returncode:
      sys.exit(f'error: --algorithm={name}: {child.stderr.strip().splitlines()[-1]}')
    line = child.stdout.strip().splitlines()[-1]
    print(line, flush=True)
    rows.append(json.loads(line))
  print(f'{"algorithm":<10} {"steps/s":>8} {"tasks/s":>8} {"compile s":>9} {"peak MB":>8} '
        f'{"step temp MB":>12}')
  for r in rows:
    print(f'{r["algorithm"]:<10} {r["steps_per_s"]:>8.2f} {r["tasks_per_s"]:>8.1f} '
          f'{r["compile_s"]:>9.1f} {r["peak_rss_mb"]:>8.0f} {r["step_temp_mb"]:>12.1f}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.algorithms:
    compare_algorithms(FLAGS.algorithms)
    return
  config = cli.config_or_exit(FLAGS)
  try:
    if FLAGS.synthetic_data:
      if config.has('pretrain_classes') and config.pretrain_classes is None:
        config = config.replace(pretrain_classes=1000)
      run = run_lib.build_run(config, data=False)
      batches = [SyntheticSource(run).train_batch(i) for i in range(FLAGS.window_steps)]
    else:
      run = run_lib.build_run(config)
      batches = list(run.train_batches(0, FLAGS.window_steps))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {cli.flag_words(e)}')
  config = run.config
  state = run.init_state()
  step_fn, clock, compiled = run.step_fn(), hooks.Clock(), {}
  state = _run_window(step_fn, state, batches[:1], clock, compiled)  # compiles it
  compile_s = clock.compile_s
  memory = next(iter(compiled.values())).memory_analysis()
  temp_mb = memory.temp_size_in_bytes / 2 ** 20 if memory is not None else float('nan')

  peer = None
  if FLAGS.compare:
    if config.algorithm not in ('maml', 'fomaml', 'protonet'):
      sys.exit(f'error: --compare=learn2learn: --algorithm={config.algorithm} has no '
               'learn2learn counterpart here (maml, fomaml, protonet)')
    if config.algorithm == 'protonet' and config.model == 'mlp':
      sys.exit('error: --compare=learn2learn: --algorithm=protonet needs an image dataset '
               f'(--dataset={config.dataset})')
    try:
      l2l_compare.check_installed()
    except ImportError as e:
      sys.exit(f'error: --compare=learn2learn: {e}')
    peer = l2l_compare.Learn2LearnProcess(torch_config(run), [
        tuple(np.asarray(v) for v in (b.support.x, b.support.y, b.query.x, b.query.y))
        for b in batches])

  rates, peer_rates = [], []
  for window in range(FLAGS.windows + 1):  # the first window is warm-up
    start = time.perf_counter()
    state = _run_window(step_fn, state, batches, clock, compiled)
    rates.append(FLAGS.window_steps / (time.perf_counter() - start))
    if peer is not None and window:
      peer_rates.append(FLAGS.window_steps / peer.window(FLAGS.window_steps))
  steps_per_s = statistics.median(rates[1:])
  extra = {}
  if peer is not None:
    ratios = [a / b for a, b in zip(rates[1:], peer_rates)]
    extra = {'learn2learn_steps_per_s': round(statistics.median(peer_rates), 3),
             'learn2learn_peak_rss_mb': round(peer.peak_rss_mb(), 1),
             'ratios': [round(r, 3) for r in ratios],
             'median_ratio': round(statistics.median(ratios), 3)}
    peer.close()
  print(json.dumps({
      'algorithm': config.algorithm, 'dataset': config.dataset,
      'inner_steps': config.get('inner_steps'), 'meta_batch_size': config.meta_batch_size,
      'task_chunk': run_lib.task_chunk(config),
      'backend': jax.default_backend(), 'devices': jax.device_count(),
      'steps_per_s': round(steps_per_s, 2),
      'tasks_per_s': round(steps_per_s * config.meta_batch_size, 1),
      'compile_s': round(compile_s, 2),
      'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      # XLA's buffers for one meta-step's intermediates (activations kept for
      # the backward pass, etc.), from the compiled step's memory analysis.
      'step_temp_mb': round(temp_mb, 1),
      **extra,
  }))


if __name__ == '__main__':
  cli.focus_help()  # --help: the chosen parts' settings; --helpfull: all
  app.run(main)
