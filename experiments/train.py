r"""Meta-trains one algorithm, then evaluates it on held-out tasks.

With no flags: MAML on sinusoid regression (K=10) beside the pretrained
baseline, a table of held-out MSE with 95% intervals and a PNG of adapted
curves, all in a fresh temporary workdir that is printed at the start.
Naming an algorithm and a dataset is enough for their standard setting
(Omniglot: 5-way 1-shot, the algorithm's paper protocol sized for a CPU).

  python experiments/train.py
  python experiments/train.py --dataset=omniglot --algorithm=maml
  python experiments/train.py --flagfile=experiments/configs/sinusoid_reptile.flags
  python experiments/train.py --workdir=runs/maml   # run again to resume
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from metajax import cli
from metajax import evaluate
from metajax import loop
from metajax import rundir

cli.define_config_flags()
flags.DEFINE_string('workdir', None, 'run directory (default: a new temporary one)')
flags.DEFINE_list('baselines', None,
                  'algorithms trained beside --algorithm with the same flags (less the '
                  'algorithm settings a baseline does not use), each in <workdir>/<name>, '
                  'and shown in the same table (default: pretrained for sinusoid, none for images)')
flags.DEFINE_bool('plot', True, 'save a PNG of adapted curves (sinusoid)')
flags.DEFINE_bool('progress', True, 'show a progress bar')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    config = cli.config_from_flags(FLAGS)
    requested = FLAGS.baselines
    if requested is None:
      requested = ['pretrained'] if config.data.task == 'regression' else []
    baselines = [b for b in requested if b and b != config.algorithm]
    baseline_configs = [config.for_algorithm(b).validate() for b in baselines]
  except ValueError as e:
    sys.exit(f'error: {cli.flag_words(e)}')
  workdir = FLAGS.workdir or tempfile.mkdtemp(prefix='metajax-')
  print(f'workdir: {workdir}', flush=True)

  runs = []
  start = time.time()
  try:
    for cfg, wd in [(config, workdir)] + [
        (c, os.path.join(workdir, c.algorithm)) for c in baseline_configs]:
      result = loop.train_and_evaluate(cfg, wd, show_progress=FLAGS.progress)
      print(result.summary(), flush=True)
      runs.append(result)
  except loop.RunInterrupted as e:
    again = ('the same command again' if FLAGS.workdir
             else f'the same command with --workdir={e.workdir}')
    what = 'test it' if e.stage == 'testing' else 'resume'
    print(f'{e}. Run {again} to {what}.', file=sys.stderr)
    sys.exit(130)
  except (ValueError, FloatingPointError, OSError, rundir.RunDirectoryBusyError) as e:
    if not FLAGS.workdir and not os.listdir(workdir):  # the temporary folder made above
      os.rmdir(workdir)
    sys.exit(f'error: {cli.flag_words(e)}')
  if FLAGS.baselines is not None:
    with open(os.path.join(workdir, 'flags.txt'), 'a') as f:
      f.write(f'--baselines={",".join(FLAGS.baselines)}\n')

  first = runs[0].records[0]
  episode = (f'K={config.shots}' if config.data.task == 'regression'
             else f'Meta-Dataset episodes of 5 to {config.max_ways} ways'
             if config.episodes == 'variable' else f'{config.ways}-way {config.shots}-shot')
  print(f'\nHeld-out {config.dataset} tasks: {first["num_tasks"]}, {episode}; '
        f'{first["metric"]} after inner steps (mean +- 95% interval)')
  for result in runs:
    print(evaluate.format_records(result.config.algorithm, result.records))
  if FLAGS.plot and config.dataset == 'sinusoid':  # figure 2 of the MAML paper
    from metajax import plotting  # pylint: disable=g-import-not-at-top
    path = plotting.plot_sinusoid_adaptation(
        [(r.config.algorithm, r.learner, r.state.theta) for r in runs],
        os.path.join(workdir, 'sinusoid_adaptation.png'),
        steps=runs[0].config.eval_inner_steps, shots=config.shots)
    print(f'plot: {path}')
  print(f'total wall-clock: {time.time() - start:.1f} s; eval.json in {workdir}')


if __name__ == '__main__':
  cli.focus_help()  # --help: the chosen parts' settings; --helpfull: all
  app.run(main)
