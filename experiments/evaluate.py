r"""Evaluates a trained run on held-out tasks and adds the records to `<workdir>/eval.json`.

Records of another protocol (split, ways, shots, query, inner steps, number of
tasks, checkpoint) are kept; one of the same protocol is replaced. `--out`
writes them to another file instead; a run directory that cannot be written
(read-only) is still scored, its records printed.

  python experiments/evaluate.py --workdir=runs/maml --num_tasks=600
  python experiments/evaluate.py --workdir=runs/protonet_5w1s --ways=20 --data_dir=/data/omniglot
  python experiments/evaluate.py --workdir=/shared/runs/maml --out=my_eval.json
"""

import contextlib
import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

from metajax import cli
from metajax import evaluate
from metajax import rundir
from metajax.data.source import DataSummary

flags.DEFINE_string('workdir', None, 'run directory written by train.py', required=True)
flags.DEFINE_integer('num_tasks', 600, 'held-out tasks')
flags.DEFINE_list('inner_steps', None, 'inner-step counts (default: the run\'s --eval_inner_steps)')
flags.DEFINE_enum('split', 'test', ['val', 'test'], 'held-out split')
flags.DEFINE_integer('step', None, 'checkpoint step (default: the best on validation if the '
                     'run kept one, else the latest)')
flags.DEFINE_integer('ways', None, 'test with other ways than trained (learners without a '
                     'head, e.g. protonet: 20-way tests of a 5-way run)')
flags.DEFINE_integer('shots', None, 'test with other shots than trained (protonet)')
flags.DEFINE_string('data_dir', None, 'the data folder (default: the one the run recorded in '
                    'config.json)')
flags.DEFINE_string('data_source', None, 'files | tfds (default: the run\'s)')
flags.DEFINE_bool('new_data', False, 'score the data as it is now even if its class split '
                  'differs from the one the run recorded (a separate record in eval.json)')
flags.DEFINE_string('out', None, 'JSON file the records are added to (default: the run\'s '
                    'eval.json)')
FLAGS = flags.FLAGS


def _seen_in_training(run) -> int:
  """How many of the classes scored now were in the run's recorded training split."""
  recorded = rundir.read_classes(rundir.locate(FLAGS.workdir)[0]) or {}
  trained = set(recorded.get('train', {}).get('classes', []))
  return len(trained & set(run.source.class_names(FLAGS.split)))


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.num_tasks < 1:
    sys.exit(f'error: --num_tasks={FLAGS.num_tasks}: must be a positive integer')
  try:
    run, state = rundir.load_run(FLAGS.workdir, FLAGS.step)
    data = {name: FLAGS[name].value for name in ('data_dir', 'data_source')
            if FLAGS[name].value is not None}
    if data:
      run = dataclasses.replace(run, config=run.config.replace(**data).validate())
    steps = None
    if FLAGS.inner_steps is not None:
      steps = tuple(int(s) for s in FLAGS.inner_steps)
      if any(s < 0 for s in steps):
        raise ValueError(f'--inner_steps={",".join(FLAGS.inner_steps)}: must be >= 0')
    run = run.for_episodes(FLAGS.ways, FLAGS.shots, steps, show_progress=True)
    if isinstance(run.source, DataSummary):
      print(run.source.summary(), file=sys.stderr)
    changed = None
    try:
      rundir.check_classes(
          rundir.locate(FLAGS.workdir)[0], rundir.class_record(run.source),
          'Restore the data the run was trained on, or pass --new_data to score the data as '
          'it is now (recorded beside the run\'s own records).')
    except rundir.DataChangedError as e:
      if not FLAGS.new_data:
        raise
      changed = _seen_in_training(run)
      print(f'--new_data: {str(e).split(". Restore")[0]}; {changed} of the '
            f'{len(run.source.class_names(FLAGS.split))} {FLAGS.split} classes scored now were '
            'training classes of the run (its records say data_changed and '
            'classes_seen_in_training)', file=sys.stderr)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {cli.flag_words(e)}')
  workdir, _ = rundir.locate(FLAGS.workdir)
  writable = os.access(workdir, os.W_OK)
  try:
    with rundir.exclusive(workdir) if writable else contextlib.nullcontext():
      records = run.evaluate(state.theta, FLAGS.split, FLAGS.num_tasks)
      for r in records:
        r['checkpoint_step'] = int(state.step)
        if changed is not None:
          r.update(data_changed=True, classes_seen_in_training=changed)
      print(evaluate.format_records(run.config.algorithm, records))
      path = None
      if FLAGS.out is not None or writable:
        try:
          path = rundir.write_eval(workdir, records, FLAGS.out)
        except OSError as e:
          print(f'could not write {FLAGS.out or "eval.json"} ({e.strerror}); the records:')
  except rundir.RunDirectoryBusyError as e:
    sys.exit(f'error: {cli.flag_words(e)}')
  if path is None:
    if not writable and FLAGS.out is None:
      print(f'{workdir} is read-only: the records are not written (--out=FILE writes them); '
            'they are:')
    print(json.dumps(records, indent=2))
  else:
    print(f'written: {path}')


if __name__ == '__main__':
  app.run(main)
