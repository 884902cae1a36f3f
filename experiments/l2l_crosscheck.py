r"""Trajectory cross-check of MAML and first-order MAML against learn2learn on real Omniglot.

For each algorithm (maml, fomaml) and setting (5-way 1-shot, 20-way 1-shot) both
libraries train from the same Conv4 weights (metajax's initialisation copied
into PyTorch) on the same episodes (the metajax sampler's arrays, step by
step), with the same inner loop (SGD 0.4, one step, as the presets
`omniglot_{maml,fomaml}_{5w1s,20w1s}_cpu.flags`; learn2learn's `MAML` with
`first_order` for fomaml), the same meta-optimizer (Adam 1e-3, gradients
averaged over the meta-batch) and the same batch norm (statistics of the batch
at hand). Per meta-step it records, for both, the query loss after adaptation,
the support loss before adaptation and the meta-gradient norm (means over the
meta-batch), and writes them to `<workdir>/crosscheck.json` and
`<workdir>/crosscheck.png`, with per step the largest relative difference of
the three and, over blocks of `--block` steps after the first `--burn_in`, a
paired comparison of the two curves (mean difference and its t statistic over
block means). The two runs start equal to float32 rounding; chaos then makes
their trajectories part, so only their statistics can agree afterwards. The
yardsticks for how far apart are metajax against itself, the same comparison:
`--reference=perturbed` from weights changed once by float32 rounding
(relative 1e-7), `--reference=rechunked` with the meta-batch's tasks vmapped
in chunks of `--chunk` (2) instead of one at a time (another order of the same
sums, so rounding differs at every step, as it does between two libraries;
neither needs torch).

  pip install -e ".[bench]"   # then learn2learn 0.2.0 from source (docs/speed.md)
  python experiments/l2l_crosscheck.py --workdir=runs/crosscheck --num_steps=400
  python experiments/l2l_crosscheck.py --workdir=runs/chaos --num_steps=400 --reference=perturbed
  python experiments/l2l_crosscheck.py --workdir=runs/rechunked --num_steps=400 --reference=rechunked
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import l2l_compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from metajax import cli
from metajax.plotting import plt
from metajax.run import build_run

SETTINGS = ('5w1s', '20w1s')
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
CURVES = ('query_loss', 'support_loss_before', 'grad_norm')

flags.DEFINE_string('workdir', None, 'where crosscheck.json and crosscheck.png go (new folder)')
flags.DEFINE_list('algorithms', ['maml', 'fomaml'], 'maml and/or fomaml')
flags.DEFINE_list('settings', list(SETTINGS), 'episodes: 5w1s and/or 20w1s')
flags.DEFINE_integer('num_steps', 300, 'meta-steps of each run')
flags.DEFINE_integer('burn_in', 50, 'steps before the paired comparison')
flags.DEFINE_integer('block', 25, 'steps per block of the paired comparison')
flags.DEFINE_integer('threads', 0, 'torch threads (0: every core)')
flags.DEFINE_integer('seed', 0, 'seed of the initialisation and the episodes')
flags.DEFINE_enum('reference', 'learn2learn', ['learn2learn', 'perturbed', 'rechunked'],
                  'what metajax is compared with: learn2learn; metajax itself from weights '
                  'perturbed by float32 rounding (relative 1e-7, once); or metajax itself with '
                  'its tasks vmapped in chunks of --chunk (the same sums in another order, so '
                  'rounding differs at every step, as between two libraries). The last two are '
                  'yardsticks for how far rounding alone takes two runs apart')
flags.DEFINE_integer('chunk', 2, 'tasks vmapped together in the --reference=rechunked run '
                     '(metajax runs one at a time on a CPU)')
flags.DEFINE_bool('float64', False, 'both libraries in float64 (same math: equal to ~1e-12 '
                  'at first)')
FLAGS = flags.FLAGS


def config_for(algorithm: str, setting: str):
  """The CPU preset's config (8 tasks; one inner SGD step of 0.4; Adam 1e-3)."""
  return cli.config_from_flagfile(os.path.join(CONFIGS, f'omniglot_{algorithm}_{setting}_cpu.flags'),
                                  f'--num_steps={FLAGS.num_steps}', f'--seed={FLAGS.seed}')


def cast(tree):
  """Floating-point arrays of `tree` in float64 under --float64."""
  if not FLAGS.float64:
    return tree
  return jax.tree.map(lambda v: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating)
                      else v, tree)


def metajax_run(run, batches, perturb: bool = False):
  """(initial theta as numpy, {curve: [steps]}, seconds) of metajax's meta-steps."""
  state = cast(run.init_state())
  if perturb:
    rng = np.random.default_rng(FLAGS.seed + 1)
    state = state.replace(theta=jax.tree.map(
        lambda v: v * (1 + 1e-7 * rng.standard_normal(v.shape)).astype(v.dtype), state.theta))
  theta0 = jax.device_get(state.theta)
  step_fn = run.step_fn(donate=False)
  curves = {c: [] for c in CURVES}
  start = time.perf_counter()
  for i, batch in enumerate(batches):
    state, metrics = step_fn(state, cast(batch), jax.random.fold_in(state.rng, i))
    for c in CURVES:
      curves[c].append(float(metrics[c]))
  return theta0, curves, time.perf_counter() - start


def torch_model(theta, ways: int):
  """l2l_compare's PyTorch Conv4 holding metajax's initial weights."""
  import torch  # pylint: disable=g-import-not-at-top
  model = l2l_compare.build_model({'model': 'conv4', 'in_channels': 1, 'channels': 64,
                                   'algorithm': 'maml', 'side': 28, 'ways': ways})
  if FLAGS.float64:  # before the copy: float64 weights copied into float32 ones would round
    model = model.double()
  params = theta['model']['params']
  dtype = np.float64 if FLAGS.float64 else np.float32
  tensor = lambda a: torch.from_numpy(np.array(a, dtype))  # a writable copy
  with torch.no_grad():
    for i in range(4):
      conv, norm = model[4 * i], model[4 * i + 1]
      conv.weight.copy_(tensor(np.transpose(params[f'convs_{i}']['kernel'], (3, 2, 0, 1))))
      conv.bias.copy_(tensor(params[f'convs_{i}']['bias']))
      norm.weight.copy_(tensor(params[f'norms_{i}']['scale']))
      norm.bias.copy_(tensor(params[f'norms_{i}']['bias']))
    model[-1].weight.copy_(tensor(params['head']['kernel'].T))
    model[-1].bias.copy_(tensor(params['head']['bias']))
  return model


def learn2learn_run(theta0, batches, algorithm: str, ways: int, inner_lr: float):
  """({curve: [steps]}, seconds) of learn2learn's MAML on the same episodes."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(FLAGS.threads or os.cpu_count())
  maml = l2l_compare.import_learn2learn_algorithms().MAML(
      torch_model(theta0, ways), lr=inner_lr, first_order=algorithm == 'fomaml')
  opt = torch.optim.Adam(maml.parameters(), 1e-3)
  dtype = np.float64 if FLAGS.float64 else np.float32
  images = lambda x: torch.from_numpy(np.asarray(x, dtype)).permute(0, 3, 1, 2).contiguous()
  labels = lambda y: torch.from_numpy(np.asarray(y)).long()
  curves = {c: [] for c in CURVES}
  start = time.perf_counter()
  for batch in batches:
    opt.zero_grad()
    tasks = len(batch.support.y)
    query_loss = support_loss = 0.0
    for t in range(tasks):
      learner = maml.clone()
      loss = F.cross_entropy(learner(images(batch.support.x[t])), labels(batch.support.y[t]))
      learner.adapt(loss)
      query = F.cross_entropy(learner(images(batch.query.x[t])), labels(batch.query.y[t]))
      (query / tasks).backward()
      query_loss += query.item() / tasks
      support_loss += loss.item() / tasks
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in maml.parameters()))
    opt.step()
    for c, v in zip(CURVES, (query_loss, support_loss, float(norm))):
      curves[c].append(v)
  return curves, time.perf_counter() - start


def compare(a: dict, b: dict) -> dict:
  """Per-step largest relative difference, and block-paired statistics per curve."""
  relative = np.max([np.abs(np.subtract(a[c], b[c])) / np.maximum(np.abs(a[c]), np.abs(b[c]))
                     for c in CURVES], axis=0)
  out = {'max_relative_difference': relative.tolist(),
         'first_step_relative_difference': float(relative[0]),
         'steps_within_1e-4': int(np.argmax(relative > 1e-4)) if np.any(relative > 1e-4)
                              else len(relative)}
  for c in CURVES:
    d = (np.asarray(a[c]) - np.asarray(b[c]))[FLAGS.burn_in:]
    blocks = d[:len(d) // FLAGS.block * FLAGS.block].reshape(-1, FLAGS.block).mean(1)
    late = np.asarray(b[c])[FLAGS.burn_in:]
    se = blocks.std(ddof=1) / np.sqrt(len(blocks)) if len(blocks) > 1 else float('nan')
    out[c] = {'metajax_mean': float(np.mean(np.asarray(a[c])[FLAGS.burn_in:])),
              'reference_mean': float(np.mean(late)),
              'mean_difference': float(blocks.mean()) if len(blocks) else float('nan'),
              't_statistic': float(blocks.mean() / se) if se > 0 else float('nan'),
              'blocks': len(blocks)}
  return out


def plot(results: dict, path: str) -> None:
  names = list(results)
  fig, axes = plt.subplots(len(CURVES) + 1, len(names), figsize=(4.2 * len(names), 11),
                           squeeze=False)
  for j, name in enumerate(names):
    r = results[name]
    for i, c in enumerate(CURVES):
      ax = axes[i, j]
      ax.plot(r['metajax'][c], label='metajax', lw=1)
      ax.plot(r[r['reference']][c], label=r['reference'], lw=1, alpha=0.8)
      ax.set_yscale('log' if c != 'query_loss' else 'linear')
      ax.set_title(f'{name}: {c}', fontsize=9)
      if i == 0 and j == 0:
        ax.legend(fontsize=8)
    ax = axes[-1, j]
    ax.semilogy(np.maximum(r['comparison']['max_relative_difference'], 1e-9), lw=1)
    ax.set_title(f'{name}: largest relative difference', fontsize=9)
    ax.set_xlabel('meta-step')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  if FLAGS.reference == 'learn2learn':
    l2l_compare.check_installed()
  jax.config.update('jax_enable_x64', FLAGS.float64)
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required (a new folder for the JSON and PNG)')
  if os.path.exists(os.path.join(FLAGS.workdir, 'crosscheck.json')):
    raise app.UsageError(f'--workdir={FLAGS.workdir} already holds crosscheck.json')
  for name, values, choices in (('algorithms', FLAGS.algorithms, ('maml', 'fomaml')),
                                ('settings', FLAGS.settings, SETTINGS)):
    for v in values:
      if v not in choices:
        raise app.UsageError(f'--{name}={",".join(values)}: {v!r} is not one of '
                             f'{", ".join(choices)}')
  results = {}
  for setting in FLAGS.settings:
    for algorithm in FLAGS.algorithms:
      name = f'{algorithm} {setting}'
      run = build_run(config_for(algorithm, setting), show_progress=False)
      batches = [jax.device_get(b) for b in run.train_batches(0, FLAGS.num_steps)]
      theta0, ours, ours_s = metajax_run(run, batches)
      if FLAGS.reference == 'learn2learn':
        theirs, theirs_s = learn2learn_run(theta0, batches, algorithm, run.config.ways,
                                           run.config.inner_lr)
      elif FLAGS.reference == 'perturbed':
        _, theirs, theirs_s = metajax_run(run, batches, perturb=True)
      else:
        paired = build_run(run.config.replace(task_chunk=FLAGS.chunk), show_progress=False)
        _, theirs, theirs_s = metajax_run(paired, batches)
      comparison = compare(ours, theirs)
      results[name] = {'metajax': ours, FLAGS.reference: theirs, 'comparison': comparison,
                       'seconds': {'metajax': ours_s, FLAGS.reference: theirs_s},
                       'reference': FLAGS.reference}
      late = {c: (round(comparison[c]['metajax_mean'], 4),
                  round(comparison[c]['reference_mean'], 4),
                  round(comparison[c]['t_statistic'], 2)) for c in CURVES}
      print(f'{name}: step-0 relative difference {comparison["first_step_relative_difference"]:.2e}'
            f', within 1e-4 for {comparison["steps_within_1e-4"]} steps; after step '
            f'{FLAGS.burn_in} (metajax, {FLAGS.reference}, paired t): {late}; '
            f'{ours_s:.0f} s / {theirs_s:.0f} s', flush=True)
      os.makedirs(FLAGS.workdir, exist_ok=True)
      with open(os.path.join(FLAGS.workdir, 'crosscheck.json'), 'w') as f:
        json.dump({'flags': {k: FLAGS[k].value for k in (
            'algorithms', 'settings', 'num_steps', 'burn_in', 'block', 'seed', 'float64',
            'reference', 'chunk')}, 'results': results}, f)
      plot(results, os.path.join(FLAGS.workdir, 'crosscheck.png'))
  print(f'wrote {FLAGS.workdir}/crosscheck.json and crosscheck.png')


if __name__ == '__main__':
  app.run(main)
