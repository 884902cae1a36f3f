r"""Trains every algorithm on sinusoid for each K and prints the MSE table.

Each algorithm's settings come from `experiments/configs/sinusoid_<name>.flags`;
every run lives in `<workdir>/<name>_k<K>` and resumes if it is there already.

  python experiments/sinusoid_table.py --workdir=runs/sinusoid_table
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

from metajax import cli
from metajax import loop

flags.DEFINE_string('workdir', 'runs/sinusoid_table', 'folder of the runs')
flags.DEFINE_list('shots', ['5', '10'], 'values of K')
flags.DEFINE_list('algorithms', ['maml', 'fomaml', 'reptile', 'anil', 'metasgd', 'pretrained'],
                  'algorithms, each with a preset in experiments/configs')
flags.DEFINE_integer('num_steps', None, 'override the presets\' meta-steps')
FLAGS = flags.FLAGS
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


def preset(name: str, shots: int):
  args = [f'--shots={shots}'] + ([f'--num_steps={FLAGS.num_steps}'] if FLAGS.num_steps else [])
  return cli.config_from_flagfile(os.path.join(CONFIGS, f'sinusoid_{name}.flags'), *args)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  rows = []
  for shots in map(int, FLAGS.shots):
    for name in FLAGS.algorithms:
      config = preset(name, shots)
      start = time.time()
      result = loop.train_and_evaluate(
          config, os.path.join(FLAGS.workdir, f'{name}_k{shots}'), show_progress=False)
      seconds = time.time() - start
      by_steps = {r['inner_steps']: r for r in result.records}
      rows.append({'algorithm': name, 'K': shots, 'seconds': round(seconds, 1),
                   'meta_steps': config.num_steps, 'results': result.records})
      cells = ' | '.join(f'{by_steps[k]["mean"]:.3f} +- {by_steps[k]["ci95"]:.3f}'
                         for k in result.config.eval_inner_steps)
      print(f'| {name} | {shots} | {cells} | {seconds:.0f} s |', flush=True)
  with open(os.path.join(FLAGS.workdir, 'table.json'), 'w') as f:
    json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
