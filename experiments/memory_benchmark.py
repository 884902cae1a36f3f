r"""Peak memory and time per meta-step of second-order MAML against inner steps.

Runs experiments/benchmark.py in a fresh process for each number of inner
steps, with and without --remat, and prints a Markdown table (and writes it
with the raw JSON to --out). Defaults: Omniglot 5-way 1-shot, 15 queries,
Conv4, inner SGD 0.4, second order.

Two memory figures: the process's peak resident set (which includes the JAX
runtime and the dataset, about 0.5 GB before any step runs) and XLA's temporary
buffers of the compiled meta-step (what grows with the unroll).

  python experiments/memory_benchmark.py --out=runs/memory.json
  python experiments/memory_benchmark.py --inner_steps=1,5 -- --dataset=sinusoid
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

flags.DEFINE_list('inner_steps', ['1', '5', '10', '25', '50', '100'], 'inner-step counts')
flags.DEFINE_list('remat', ['false', 'true'], '--remat settings to run')
flags.DEFINE_integer('meta_batch_size', 8, 'tasks per meta-step')
flags.DEFINE_integer('windows', 2, 'timed windows per run')
flags.DEFINE_integer('window_steps', 2, 'meta-steps per window')
flags.DEFINE_string('out', None, 'JSON file for the results')
FLAGS = flags.FLAGS
BENCHMARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'benchmark.py')
DEFAULTS = ['--dataset=omniglot', '--ways=5', '--shots=1', '--query=15', '--inner_lr=0.4',
            '--algorithm=maml']


def run(inner_steps: int, remat: str, extra: list[str]) -> dict:
  args = [sys.executable, BENCHMARK, *DEFAULTS, *extra, f'--inner_steps={inner_steps}',
          f'--remat={remat}', f'--meta_batch_size={FLAGS.meta_batch_size}',
          f'--windows={FLAGS.windows}', f'--window_steps={FLAGS.window_steps}']
  done = subprocess.run(args, capture_output=True, text=True, check=False)
  if done.returncode:
    return {'inner_steps': inner_steps, 'remat': remat == 'true',
            'error': done.stderr.strip().splitlines()[-1] if done.stderr else 'failed'}
  return {**json.loads(done.stdout.strip().splitlines()[-1]), 'remat': remat == 'true'}


def main(argv):
  extra = argv[1:]
  rows = []
  print('| inner steps | remat | s / meta-step | peak RSS (MB) | step buffers (MB) |')
  print('| --- | --- | --- | --- | --- |')
  for steps in map(int, FLAGS.inner_steps):
    for remat in FLAGS.remat:
      row = run(steps, remat, extra)
      rows.append(row)
      if 'error' in row:
        print(f'| {steps} | {remat} | {row["error"]} | | |', flush=True)
        continue
      print(f'| {steps} | {remat} | {1 / row["steps_per_s"]:.2f} | {row["peak_rss_mb"]:.0f} '
            f'| {row["step_temp_mb"]:.1f} |', flush=True)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
