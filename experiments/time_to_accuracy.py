r"""Validation accuracy against training time, from run directories trained with `--eval_every`.

Each run (`--runs=label=workdir,...`) is read from its directory: the
validation rows of `metrics.jsonl` (accuracy after the most inner steps
evaluated, against `time_s`: seconds of training, compilation included and
validation excluded, continued across resumes) and the test records of
`eval.json` (the best-on-validation checkpoint, with its 95% interval, drawn at
the time its step was reached). Runs of the same ways and shots share a panel
(a label may name one run per setting, and keeps its colour across panels);
`--targets=20w1s=0.958,...` draws a reference line per setting (e.g. a paper's
number) and the table reports when validation first reached it.

  python experiments/time_to_accuracy.py --out=runs/time_to_accuracy.png \
      --runs=maml=runs/maml_20w1s,mamlpp=runs/mamlpp_20w1s --targets=20w1s=0.958

It writes the PNG (a new file: an existing one is refused) and prints one row a
run: setting, meta-steps, training minutes, best validation accuracy and when,
the test accuracy of that checkpoint, and minutes to the target. A bad
invocation prints one line, `error: ...`, and exits with status 1.
"""

import collections
import json
import os
import sys

from absl import app
from absl import flags

from metajax import rundir
from metajax.plotting import plt

flags.DEFINE_list('runs', None, 'label=workdir pairs: run directories trained with --eval_every')
flags.DEFINE_string('out', None, 'the PNG to write (must not exist)')
flags.DEFINE_list('targets', [], 'setting=accuracy pairs (e.g. 20w1s=0.958): reference lines')
FLAGS = flags.FLAGS


def _pairs(flag: str, values: list[str]) -> list[tuple[str, str]]:
  pairs = []
  for value in values:
    label, sep, rest = value.partition('=')
    if not sep or not label or not rest:
      raise app.UsageError(f'--{flag}={value}: expected label=value')
    pairs.append((label, rest))
  return pairs


def read_curve(workdir: str) -> dict:
  """A run directory's validation curve, test result and setting.

  Returns a dict with `setting` ('20w1s'), `times` (minutes),
  `dataset`, `steps`, `val` (accuracies), `inner_steps`, `num_steps` (last logged step),
  `minutes` (last logged training time) and `test` (the test record of the
  selected checkpoint, or None).
  """
  config = rundir.read_config(workdir)
  path = os.path.join(workdir, 'metrics.jsonl')
  if config is None or not os.path.exists(path):
    raise FileNotFoundError(f'{workdir}: not a run directory (no config.json or metrics.jsonl)')
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  val = [r for r in rows if r.get('split') == 'val']
  keys = sorted((k for k in (val[0] if val else {}) if k.startswith('accuracy_')),
                key=lambda k: int(k.split('_')[1]))
  if not keys:
    raise ValueError(f'{workdir}: no validation accuracy in metrics.jsonl '
                     '(train with --eval_every on a classification dataset)')
  if any('time_s' not in r for r in val):
    raise ValueError(f'{workdir}: validation rows without time_s (a run from before time_s)')
  key = keys[-1]
  inner_steps = int(key.split('_')[1])
  tests = [r for r in rundir.read_eval(workdir)
           if r.get('split') == 'test' and r.get('inner_steps') == inner_steps
           and r.get('ways') == config.ways and r.get('shots') == config.shots]
  return {
      'setting': f'{config.ways}w{config.shots}s', 'dataset': config.dataset,
      'times': [r['time_s'] / 60 for r in val], 'steps': [r['step'] for r in val],
      'val': [r[key] for r in val], 'inner_steps': inner_steps,
      'num_steps': rows[-1]['step'], 'minutes': max(r.get('time_s', 0.0) for r in rows) / 60,
      'test': max(tests, key=lambda r: r['num_tasks']) if tests else None,
  }


def first_reaching(curve: dict, target: float):
  """Minutes of training when validation first reached `target` (None: never)."""
  return next((t for t, v in zip(curve['times'], curve['val']) if v >= target), None)


def plot(curves: list, targets: dict, path: str) -> str:
  """One panel per setting: validation accuracy against minutes, the test result as a bar.

  `curves`: (label, curve) pairs; a label keeps its colour in every panel.
  """
  by_setting = collections.defaultdict(list)
  colours = {}
  for label, curve in curves:
    by_setting[curve['setting']].append((label, curve))
    colours.setdefault(label, f'C{len(colours)}')
  settings = sorted(by_setting, key=lambda s: int(s.split('w')[0]))
  fig, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(6 * len(settings), 4.2))
  for ax, setting in zip(axes[0], settings):
    for label, curve in by_setting[setting]:
      line, = ax.plot(curve['times'], [100 * v for v in curve['val']], 'o-', ms=3,
                      color=colours[label],
                      label=f'{label} (validation, {curve["inner_steps"]} steps)')
      test = curve['test']
      if test is not None:
        at = curve['times'][curve['steps'].index(test['checkpoint_step'])] \
            if test.get('checkpoint_step') in curve['steps'] else curve['minutes']
        ax.errorbar([at], [100 * test['mean']], yerr=[100 * test['ci95']], fmt='*',
                    ms=10, color=line.get_color(), capsize=3,
                    label=f'{label} test: {100 * test["mean"]:.2f} +- {100 * test["ci95"]:.2f} %')
    if setting in targets:
      ax.axhline(100 * targets[setting], color='k', ls='--', lw=1,
                 label=f'target {100 * targets[setting]:.1f} %')
    ways, shots = setting.rstrip('s').split('w')
    datasets = sorted({curve['dataset'] for _, curve in by_setting[setting]})
    ax.set_title(f'{", ".join(datasets)} {ways}-way {shots}-shot')
    ax.set_xlabel('training time (minutes, validation excluded)')
    ax.set_ylabel('accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def main(argv):
  """Runs `_main`; a usage error is one line on stderr, not the whole help."""
  try:
    _main(argv)
  except app.UsageError as e:
    sys.exit(f'error: {e}')


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e} (--helpshort lists the flags)')


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {" ".join(argv[1:])} (flags take the form '
                         '--name=value)')
  if not FLAGS.runs:
    raise app.UsageError('--runs: give at least one label=workdir')
  if not FLAGS.out:
    raise app.UsageError('--out: give the PNG to write')
  if os.path.exists(FLAGS.out):
    raise app.UsageError(f'--out={FLAGS.out}: exists; results are not overwritten '
                         '(remove it or choose another path)')
  if not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.out))):
    raise app.UsageError(f'--out={FLAGS.out}: its folder does not exist')
  targets = {}
  for setting, value in _pairs('targets', FLAGS.targets):
    try:
      targets[setting] = float(value)
    except ValueError:
      raise app.UsageError(f'--targets={setting}={value}: not a number') from None
  curves, seen = [], {}
  for label, workdir in _pairs('runs', FLAGS.runs):
    if not os.path.isdir(workdir):
      raise app.UsageError(f'--runs={label}={workdir}: no such directory')
    try:
      curve = read_curve(workdir)
    except (FileNotFoundError, ValueError) as e:
      raise app.UsageError(f'--runs={label}={workdir}: {e}') from None
    if (label, curve['setting']) in seen:  # one label per setting; across settings it repeats
      raise app.UsageError(f'--runs={label}={workdir}: {label} is already '
                           f'{seen[label, curve["setting"]]} for {curve["setting"]}')
    seen[label, curve['setting']] = workdir
    curves.append((label, curve))
  print(f'{"run":<16} {"setting":<7} {"steps":>6} {"minutes":>8} {"best val (min)":>16} '
        f'{"test (95% CI)":>18} {"to target":>10}')
  for label, c in curves:
    best = max(range(len(c['val'])), key=lambda i: c['val'][i])
    test = (f'{100 * c["test"]["mean"]:.2f} +- {100 * c["test"]["ci95"]:.2f}'
            if c['test'] else 'not tested')
    target = targets.get(c['setting'])
    reached = first_reaching(c, target) if target is not None else None
    to_target = ('-' if target is None else
                 'not reached' if reached is None else f'{reached:.1f} min')
    print(f'{label:<16} {c["setting"]:<7} {c["num_steps"]:>6} {c["minutes"]:>8.1f} '
          f'{100 * c["val"][best]:>8.2f} ({c["times"][best]:>4.1f}) {test:>18} {to_target:>10}')
  print(f'wrote {plot(curves, targets, FLAGS.out)}')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
