r"""Evaluates a trained run on held-out tasks and writes `<workdir>/eval.json`.

  python experiments/evaluate.py --workdir=runs/maml --num_tasks=600
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

from metajax import builders
from metajax import evaluate
from metajax import train

flags.DEFINE_string('workdir', None, 'run directory written by train.py', required=True)
flags.DEFINE_integer('num_tasks', 600, 'held-out tasks')
flags.DEFINE_list('inner_steps', None, 'inner-step counts (default: the run\'s --eval_inner_steps)')
flags.DEFINE_enum('split', 'test', ['val', 'test'], 'held-out split')
flags.DEFINE_integer('step', None, 'checkpoint step (default: the best on validation if the '
                     'run kept one, else the latest)')
flags.DEFINE_integer('ways', None, 'test with other ways than trained (learners without a '
                     'head, e.g. protonet: 20-way tests of a 5-way run)')
flags.DEFINE_integer('shots', None, 'test with other shots than trained (protonet)')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.num_tasks < 1:
    sys.exit(f'error: --num_tasks={FLAGS.num_tasks}: must be a positive integer')
  try:
    config, learner, state = train.load_run(FLAGS.workdir, FLAGS.step)
    if FLAGS.inner_steps is not None:
      steps = tuple(int(s) for s in FLAGS.inner_steps)
      if any(s < 0 for s in steps):
        raise ValueError(f'--inner_steps={",".join(FLAGS.inner_steps)}: must be >= 0')
      config = config.replace(eval_inner_steps=steps)
    config = train.for_episodes(config, learner, FLAGS.ways, FLAGS.shots)
    source = builders.make_source(config)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  records = train.evaluate_state(config, source, learner, state.theta,
                                 FLAGS.split, FLAGS.num_tasks)
  for r in records:
    r.update(checkpoint_step=int(state.step), ways=config.num_ways, shots=config.shots)
  path = os.path.join(FLAGS.workdir, 'eval.json')
  with open(path, 'w') as f:
    json.dump(records, f, indent=2)
  print(evaluate.format_records(config.algorithm, records))
  print(f'written: {path}')


if __name__ == '__main__':
  app.run(main)
