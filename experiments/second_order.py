r"""Second-order MAML studies: meta-gradient parts, curvature, equal wall-clock.

Takes the same flags as train.py (the MAML run to study) and writes to
--workdir a JSON table `second_order.json` and PNG figures:

(a) `cosine_vs_inner_steps.png`: cosine(second-order, first-order) and the
    norm of the Hessian term of the mean meta-gradient against inner steps
    1..--max_inner_steps, at several points of training (--analyse_at).
(b) `eigenvalues_vs_inner_lr.png`: the top eigenvalues (Lanczos) of the
    support-loss Hessian at the meta-learned theta of MAML runs trained with
    each inner learning rate (--inner_lrs), beside the stability line
    lr * lambda_max = 2.
(c) `equal_wallclock.png`: held-out metric of MAML, first-order MAML and iMAML
    after --wallclock_s seconds of meta-training each.

  python experiments/second_order.py --workdir=runs/second_order
  python experiments/second_order.py --flagfile=experiments/configs/omniglot_maml_5w1s.flags \
      --workdir=runs/second_order_omniglot --analyse_at=0,50 --parts=a \
      --analysis_tasks=8 --max_inner_steps=5
  python experiments/second_order.py --load_workdir=runs/maml --workdir=...   # a trained run
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from metajax import analysis
from metajax import cli
from metajax import hooks
from metajax import rundir
from metajax import step as step_lib
from metajax.algorithms.common import split_loss
from metajax.run import build_run

cli.define_config_flags()
flags.DEFINE_string('workdir', None, 'where the JSON table and figures go', required=True)
flags.DEFINE_string('load_workdir', None,
                    'analyse the checkpoints of this trained run instead of training (a)')
flags.DEFINE_list('parts', ['a', 'b', 'c'], 'which studies to run')
flags.DEFINE_list('analyse_at', ['0', '1000', '5000'], '(a) meta-steps at which to analyse')
flags.DEFINE_integer('max_inner_steps', 10, '(a) inner steps 1..this')
flags.DEFINE_integer('analysis_tasks', 25, 'held-out tasks per analysis')
flags.DEFINE_list('inner_lrs', ['0.001', '0.003', '0.01', '0.03', '0.1'],
                  '(b) inner learning rates, one MAML run each')
flags.DEFINE_integer('eigen_train_steps', 3000, '(b) meta-steps of each of those runs')
flags.DEFINE_integer('top_k', 3, '(b) eigenvalues per Hessian')
flags.DEFINE_integer('lanczos_iters', 30, '(b) Lanczos iterations')
flags.DEFINE_float('wallclock_s', 30.0, '(c) seconds of meta-training per algorithm')
flags.DEFINE_list('wallclock_algorithms', ['maml', 'fomaml', 'imaml'], '(c) algorithms')
flags.DEFINE_float('imaml_inner_lr', 0.003,
                   '(c) iMAML\'s inner SGD rate: its inner loop must converge (lr * lambda_max < 2) '
                   'at the untrained theta, whose curvature MAML tames and iMAML does not see')
flags.DEFINE_integer('imaml_inner_steps', 50,
                     '(c) iMAML\'s inner steps (its gradient is exact only at the inner '
                     'solution, so it needs more steps than MAML\'s --inner_steps)')
flags.DEFINE_float('analysis_lambda', 1.0, '(a) lambda of the implicit meta-gradient compared')
flags.DEFINE_integer('analysis_cg_steps', 5, '(a) its conjugate-gradient iterations')
FLAGS = flags.FLAGS


def analysis_tasks(run, n):
  batch = next(iter(run.source.eval_batches('val', n)))
  return jax.tree.map(lambda v: v[:n], batch)


def lean_train(run, stops, seconds=None):
  """Meta-trains from scratch; yields (step, state, seconds of meta-steps) at each of `stops`.

  The training loop's driver (`hooks.steps`) without its logging, validation
  and checkpoints; compilation is not counted, nor the time spent in the caller.
  """
  state = run.init_state()
  stops = sorted(set(stops))
  if stops and stops[0] == 0:
    yield 0, state, 0.0
  last = stops[-1] if stops else 10 ** 9
  elapsed, mark = 0.0, [time.perf_counter()]
  restart = lambda seconds: mark.__setitem__(0, time.perf_counter())
  for step, state, _ in hooks.steps(run.step_fn(), state, run.train_batches(0, last), 0, last,
                                    on_compiled=restart):
    jax.block_until_ready(state.theta)
    elapsed += time.perf_counter() - mark[0]
    if int(state.nonfinite_step) >= 0:
      raise step_lib.NonFiniteMetaGradientError(f'meta-step {step}: meta-gradient not finite')
    if step in stops or (seconds is not None and elapsed >= seconds):
      yield step, state, elapsed
      if seconds is not None and elapsed >= seconds:
        return
    mark[0] = time.perf_counter()


def part_a(config, out):
  if FLAGS.load_workdir:
    run = rundir.load_run(FLAGS.load_workdir)[0].for_episodes()
  else:
    run = build_run(config, show_progress=False)
  config = run.config
  tasks = analysis_tasks(run, FLAGS.analysis_tasks)
  if FLAGS.load_workdir:
    states = iter([(step, rundir.load_run(FLAGS.load_workdir, step=step)[1])
                   for step in map(int, FLAGS.analyse_at)])
  else:
    states = ((s, st) for s, st, _ in lean_train(run, map(int, FLAGS.analyse_at)))
  inner_optimizer = config.sections['algorithm'].inner_optimizer_at()
  rows = []
  for step, state in states:
    for k in range(1, FLAGS.max_inner_steps + 1):
      row = analysis.compare_meta_gradients(
          run.model, run.loss_fn, state.theta['model'], tasks, inner_optimizer=inner_optimizer,
          inner_steps=k, lam=FLAGS.analysis_lambda, cg_steps=FLAGS.analysis_cg_steps)
      row.update(meta_step=step, inner_lr=config.inner_lr)
      rows.append(row)
      print(f'(a) step {step} inner {k}: cos(SO,FO) {row["cos_so_fo"]:.4f} '
            f'|H term| {row["norm_hessian_term"]:.4g} (|FO| {row["norm_fo"]:.4g}) '
            f'cos(SO,implicit) {row["cos_so_implicit"]:.4f}', flush=True)
  out['a'] = rows
  plot_a(rows, config.dataset, config.inner_lr, len(tasks.support.y),
         os.path.join(FLAGS.workdir, 'cosine_vs_inner_steps.png'))


def plot_a(rows, dataset, inner_lr, num_tasks, path):
  """Per-task mean cosine(SO, FO) and ||Hessian term|| / ||FO|| against inner steps."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for step in sorted({r['meta_step'] for r in rows}):
    sel = [r for r in rows if r['meta_step'] == step]
    ks = [r['inner_steps'] for r in sel]
    line, = axes[0].plot(ks, [r['task_cos_so_fo'] for r in sel], 'o-',
                         label=f'meta-step {step}: per task')
    axes[0].plot(ks, [r['cos_so_fo'] for r in sel], ':', color=line.get_color(),
                 label=f'meta-step {step}: of the mean')
    axes[1].plot(ks, [r['task_ratio_hessian_fo'] for r in sel], 'o-', label=f'meta-step {step}')
  axes[0].set(xlabel='inner steps', ylabel='cosine(second-order, first-order)',
              title=f'{dataset}: {num_tasks} held-out tasks, inner lr {inner_lr}')
  axes[1].set(xlabel='inner steps', ylabel='||Hessian term|| / ||first-order term||',
              yscale='log', title='per task, mean over tasks')
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=8)
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def part_b(config, out):
  rows = []
  for lr in map(float, FLAGS.inner_lrs):
    run = build_run(config.for_algorithm('maml').replace(
        inner_lr=lr, num_steps=FLAGS.eigen_train_steps), show_progress=False)
    *_, (step, state, seconds) = lean_train(run, [run.config.num_steps])
    tasks = analysis_tasks(run, FLAGS.analysis_tasks)
    variables, model, loss_fn = state.theta['model'], run.model, run.loss_fn

    def eigs(task):
      support = lambda v: split_loss(model, loss_fn, v, task.support)
      return analysis.top_eigenvalues(support, variables, FLAGS.top_k,
                                      FLAGS.lanczos_iters).eigenvalues

    top = np.asarray(jax.lax.map(jax.jit(eigs), tasks))  # [tasks, k]
    row = {'inner_lr': lr, 'meta_steps': step, 'train_s': round(seconds, 1),
           'lambda_max_mean': float(top[:, 0].mean()),
           'lambda_max_median': float(np.median(top[:, 0])),
           'lambda_max_max': float(top[:, 0].max()),
           'top_k_mean': top.mean(0).tolist(),
           'lr_times_lambda_max_mean': float(lr * top[:, 0].mean()),
           'tasks_unstable': int(np.sum(lr * top[:, 0] > 2))}
    rows.append(row)
    print(f'(b) inner lr {lr}: lambda_max mean {row["lambda_max_mean"]:.4g} '
          f'(max {row["lambda_max_max"]:.4g}), lr*lambda_max {row["lr_times_lambda_max_mean"]:.3f}, '
          f'tasks with lr*lambda_max > 2: {row["tasks_unstable"]}/{len(top)}', flush=True)
  out['b'] = rows
  lrs = np.array([r['inner_lr'] for r in rows])
  fig, ax = plt.subplots(figsize=(5.5, 4))
  ax.plot(lrs, [r['lambda_max_mean'] for r in rows], 'o-', label='top eigenvalue (mean over tasks)')
  ax.plot(lrs, [r['lambda_max_max'] for r in rows], 's--', label='top eigenvalue (max over tasks)')
  grid = np.geomspace(lrs.min(), lrs.max(), 50)
  ax.plot(grid, 2 / grid, 'k:', label='stability line lr * lambda = 2')
  ax.set(xscale='log', yscale='log', xlabel='inner learning rate',
         ylabel='lambda_max of the support-loss Hessian at theta',
         title=f'{config.dataset}, MAML, {FLAGS.eigen_train_steps} meta-steps per lr')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'eigenvalues_vs_inner_lr.png'), dpi=120)
  plt.close(fig)


def part_c(config, out):
  rows = []
  for name in FLAGS.wallclock_algorithms:
    settings = config.for_algorithm(name).replace(num_steps=10 ** 7)
    if name == 'imaml':
      settings = settings.replace(inner_steps=FLAGS.imaml_inner_steps,
                                  inner_lr=FLAGS.imaml_inner_lr,
                                  eval_inner_steps=tuple(sorted({0, FLAGS.imaml_inner_steps})))
    run = build_run(settings, show_progress=False)
    *_, (step, state, seconds) = lean_train(run, [], FLAGS.wallclock_s)
    records = run.evaluate(state.theta, 'test')
    last = max(records, key=lambda r: r['inner_steps'])
    row = {'algorithm': name, 'inner_steps': run.config.inner_steps, 'meta_steps': step,
           'train_s': round(seconds, 1),
           'records': records}
    rows.append(row)
    print(f'(c) {name}: {step} meta-steps in {seconds:.1f} s; {last["metric"]} after '
          f'{last["inner_steps"]} steps {last["mean"]:.4f} +- {last["ci95"]:.4f}', flush=True)
  out['c'] = rows
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for row in rows:
    recs = sorted(row['records'], key=lambda r: r['inner_steps'])
    ax.errorbar([r['inner_steps'] for r in recs], [r['mean'] for r in recs],
                yerr=[r['ci95'] for r in recs], marker='o', capsize=3,
                label=f'{row["algorithm"]} ({row["meta_steps"]} steps)')
  metric = rows[0]['records'][0]['metric']
  ax.set(xlabel='inner steps at test time', ylabel=f'held-out {metric} (95% CI)',
         title=f'{config.dataset}: {FLAGS.wallclock_s:.0f} s of meta-training each')
  if metric == 'mse':
    ax.set_yscale('log')
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'equal_wallclock.png'), dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = cli.config_or_exit(FLAGS)
  unknown = set(FLAGS.parts) - {'a', 'b', 'c'}
  if unknown:
    sys.exit(f'error: --parts={",".join(FLAGS.parts)}: choose among a, b, c')
  os.makedirs(FLAGS.workdir, exist_ok=True)
  path = os.path.join(FLAGS.workdir, 'second_order.json')
  out = {'config': config.to_dict(), 'backend': jax.default_backend()}
  if os.path.exists(path):
    with open(path) as f:
      out = {**json.load(f), **out}
  for part, fn in (('a', part_a), ('b', part_b), ('c', part_c)):
    if part in FLAGS.parts:
      start = time.time()
      fn(config, out)
      out[f'{part}_seconds'] = round(time.time() - start, 1)
      with open(path, 'w') as f:
        json.dump(out, f, indent=2)
  print(f'wrote {path}')


if __name__ == '__main__':
  cli.focus_help()  # --help: the chosen parts' settings; --helpfull: all
  app.run(main)
