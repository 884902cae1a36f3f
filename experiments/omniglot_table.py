r"""Trains the Omniglot presets and prints the Omniglot results table (docs/results-omniglot.md).

Each row is a preset in `experiments/configs/` (the CPU-sized MAML ones, the
ProtoNets ones); a row's run lives in `<workdir>/<row>` and resumes if it is
there already, so an interrupted table continues and a finished row is only
re-evaluated. Models without an N-way head (ProtoNets) are also tested on the
other episodes of the table (20-way 1-shot from the 5-way 1-shot run).

  python experiments/omniglot_table.py --workdir=runs/omniglot_table
  python experiments/omniglot_table.py --rows=maml_20w1s,fomaml_20w1s

Needs the official Omniglot release in `--data_dir` or $METAJAX_OMNIGLOT_DIR.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from metajax import cli
from metajax import loop

# row: (preset, extra flags, test episodes (ways, shots) beyond the trained ones)
ROWS = {
    'protonet_5w1s': ('omniglot_protonet_5w1s.flags', (), ((20, 1),)),
    'protonet_5w5s': ('omniglot_protonet_5w5s.flags', ('--num_steps=1500',), ()),
    'maml_5w1s': ('omniglot_maml_5w1s_cpu.flags', (), ()),
    'maml_5w5s': ('omniglot_maml_5w5s_cpu.flags', (), ()),
    'maml_20w1s': ('omniglot_maml_20w1s_cpu.flags', (), ()),
    'fomaml_5w1s': ('omniglot_fomaml_5w1s_cpu.flags', (), ()),
    'fomaml_5w5s': ('omniglot_fomaml_5w5s_cpu.flags', (), ()),
    'fomaml_20w1s': ('omniglot_fomaml_20w1s_cpu.flags', (), ()),
    'mamlpp_5w1s': ('omniglot_mamlpp_5w1s_cpu.flags', (), ()),
    'mamlpp_20w1s': ('omniglot_mamlpp_20w1s_cpu.flags', (), ()),
}
# The papers' accuracies (%): Finn et al. 2017 (MAML and its first-order
# approximation), Snell et al. 2017 (ProtoNets), Antoniou et al. 2019 (MAML++),
# by (ways, shots).
PAPER = {
    'maml': {(5, 1): 98.7, (5, 5): 99.9, (20, 1): 95.8},
    'fomaml': {(5, 1): 98.3, (5, 5): 99.2, (20, 1): 89.4},
    'protonet': {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0},
    'mamlpp': {(5, 1): 99.47, (20, 1): 97.65},
}
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')

flags.DEFINE_string('workdir', 'runs/omniglot_table', 'folder of the runs, one per row')
flags.DEFINE_list('rows', list(ROWS), f'rows to run, of: {", ".join(ROWS)}')
flags.DEFINE_integer('num_steps', None, 'override the presets\' meta-steps (quick checks)')
flags.DEFINE_integer('eval_tasks', None, 'override the presets\' 600 test episodes')
flags.DEFINE_string('data_dir', None, 'Omniglot folder (default: the presets\' own)')
flags.DEFINE_string('data_source', None, 'files | tfds (default: the presets\' own)')
FLAGS = flags.FLAGS


@flags.validator('rows', message=f'--rows: each must be one of {", ".join(ROWS)}')
def _known_rows(rows):
  return bool(rows) and all(r in ROWS for r in rows)


def preset(row: str):
  name, extra, _ = ROWS[row]
  overrides = [f'--{flag}={FLAGS[flag].value}'
               for flag in ('num_steps', 'eval_tasks', 'data_dir', 'data_source')
               if FLAGS[flag].value is not None]
  return cli.config_from_flagfile(os.path.join(CONFIGS, name), *extra, *overrides)


def accuracy_cell(records) -> str:
  if len(records) == 1:
    r = records[0]
    return f'{100 * r["mean"]:.2f} +- {100 * r["ci95"]:.2f} %'
  return ', '.join(f'{100 * r["mean"]:.2f} +- {100 * r["ci95"]:.2f} % '
                   f'({r["inner_steps"]} step{"s" if r["inner_steps"] != 1 else ""})'
                   for r in records)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  try:
    run_table()
  except (ValueError, FloatingPointError, FileNotFoundError) as e:
    sys.exit(f'error: {cli.flag_words(e)}')


def run_table():
  os.makedirs(FLAGS.workdir, exist_ok=True)
  print('| row | algorithm | test episodes | accuracy | paper | meta-steps | seconds |')
  print('| --- | --- | --- | --- | --- | --- | --- |', flush=True)
  table = []
  for row in FLAGS.rows:
    config = preset(row)
    start = time.time()
    result = loop.train_and_evaluate(config, os.path.join(FLAGS.workdir, row),
                                     show_progress=False)
    tests = [((config.ways, config.shots), result.records)]
    for ways, shots in ROWS[row][2]:
      records = result.run.for_episodes(ways, shots).evaluate(result.state.theta, 'test')
      tests.append(((ways, shots), records))
    seconds = time.time() - start
    for (ways, shots), records in tests:
      paper = PAPER.get(config.algorithm, {}).get((ways, shots))
      table.append({'row': row, 'algorithm': config.algorithm, 'ways': ways, 'shots': shots,
                    'meta_steps': config.num_steps, 'seconds': round(seconds, 1),
                    'paper': paper, 'records': records})
      print(f'| {row} | {config.algorithm} | {ways}-way {shots}-shot | {accuracy_cell(records)} '
            f'| {paper if paper is not None else "-"} | {config.num_steps} '
            f'| {seconds:.0f} |', flush=True)
    with open(os.path.join(FLAGS.workdir, 'table.json'), 'w') as f:
      json.dump(table, f, indent=2)
  print(f'written: {os.path.join(FLAGS.workdir, "table.json")}')


if __name__ == '__main__':
  app.run(main)
