"""Figures of adapted models (matplotlib, written to PNG files)."""

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from metajax.data.sinusoid import SinusoidFamily  # pylint: disable=g-import-not-at-top
from metajax.types import Split


def plot_sinusoid_adaptation(runs, path: str, steps=(0, 1, 10),
                             num_tasks: int = 3, shots: int = 10,
                             seed: int = 7) -> str:
  """Adapted curves against the true sinusoid, as in figure 2 of the MAML paper.

  Args:
    runs: list of (name, learner, theta).
    path: the PNG file to write.
    steps: inner-step counts to draw.
    num_tasks: rows of the figure, one unseen task each.
    shots: support points per task.
    seed: seed of the drawn tasks.

  Returns:
    `path`.
  """
  family = SinusoidFamily()
  key = jax.random.PRNGKey(seed)
  amp, phase = family.sample_functions(key, num_tasks)
  xs = jax.random.uniform(jax.random.fold_in(key, 1), (num_tasks, shots, 1),
                          minval=-5.0, maxval=5.0)
  ys = family.evaluate(amp, phase, xs)
  grid = jnp.linspace(-5.0, 5.0, 200)[:, None]
  fig, axes = plt.subplots(num_tasks, len(runs), squeeze=False,
                           figsize=(5 * len(runs), 3 * num_tasks))
  colors = plt.cm.viridis(jnp.linspace(0.0, 0.85, len(steps)))
  for col, (name, learner, theta) in enumerate(runs):
    for row in range(num_tasks):
      ax = axes[row, col]
      support = Split(xs[row], ys[row])
      ax.plot(grid[:, 0], family.evaluate(amp[row], phase[row], grid)[:, 0],
              'r-', lw=2, label='ground truth')
      for color, k in zip(colors, steps):
        pred = learner.predict(theta, support, grid, jax.random.PRNGKey(0), k)
        ax.plot(grid[:, 0], pred[:, 0], '--', color=color,
                label='pre-update' if k == 0 else f'{k} grad step{"s" * (k > 1)}')
      ax.plot(xs[row, :, 0], ys[row, :, 0], 'k^', label=f'{shots} support points')
      ax.set_ylim(-6, 6)
      if row == 0:
        ax.set_title(name)
        ax.legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
