r"""MetaOptNet's SVM head: metajax's solver beside a QP solver from the package registry.

Times the meta-step's part that the solver owns: the Crammer-Singer dual
solved for a batch of tasks (vmapped) and its vector-Jacobian product in the
support features, jitted, median of `--repeats` calls after a warm-up. The
solvers:

- `metajax`: `metaoptnet.svm_dual`, accelerated projected gradient on the
  dual, implicit VJP by the implicit function theorem (GMRES).
- `qpax`: `qpax.solve_qp_primal` (primal-dual interior point, implicit VJP
  on its relaxed KKT system), on the same dual written as a QP in the S*n
  variables alpha (Lee et al.'s formulation).

For each it prints the time per batch and, against a float64 reference
(metajax's solver to a residual of 1e-12), the largest error of alpha and the
cosine of its feature gradient to the reference's. Needs `pip install qpax`
for the second row (skipped otherwise).

  python experiments/svm_solvers.py --ways=5,20 --batch=32
"""

import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.metaoptnet import svm_dual

FLAGS = flags.FLAGS
flags.DEFINE_list('ways', ['5', '20'], 'N of the N-way 1-shot support sets')
flags.DEFINE_integer('batch', 32, 'tasks per call (the meta-batch)')
flags.DEFINE_integer('dim', 64, 'feature dimension (Conv4 on Omniglot: 64)')
flags.DEFINE_float('svm_c', 0.1, 'the SVM\'s C')
flags.DEFINE_integer('repeats', 5, 'timed calls')


def metajax_solver(features, labels, c, iterations=1000, tolerance=1e-5):
  return svm_dual(features, labels, c, None, iterations, tolerance)[0]


def qpax_solver(features, labels, c):
  """alpha [n, S] from the dual as a QP in vec(alpha) (row-major: example, then class)."""
  import qpax  # pylint: disable=g-import-not-at-top
  n = features.shape[0]
  classes = n
  onehot = jax.nn.one_hot(labels, classes, dtype=features.dtype)
  kernel = features @ features.T + jnp.eye(n, dtype=features.dtype)
  q_matrix = jnp.kron(kernel, jnp.eye(classes, dtype=features.dtype))
  p = -onehot.reshape(-1)
  g = jnp.eye(n * classes, dtype=features.dtype)
  h = c * onehot.reshape(-1)
  a = jnp.kron(jnp.eye(n, dtype=features.dtype), jnp.ones((1, classes), features.dtype))
  b = jnp.zeros(n, features.dtype)
  return qpax.solve_qp_primal(q_matrix, p, a, b, g, h).reshape(n, classes)


def measure(solver, features, labels, direction, c, repeats):
  loss = lambda f: jnp.sum(jax.vmap(lambda x, y: solver(x, y, c))(f, labels) * direction)
  step = jax.jit(jax.value_and_grad(loss))
  alpha = jax.jit(jax.vmap(lambda x, y: solver(x, y, c)))
  jax.block_until_ready(step(features))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(features))
    times.append(time.perf_counter() - start)
  return (statistics.median(times), np.asarray(alpha(features, labels)),
          np.asarray(step(features)[1]))


def main(argv):
  del argv
  try:
    import qpax  # pylint: disable=g-import-not-at-top,unused-import
    solvers = {'metajax': metajax_solver, 'qpax': qpax_solver}
  except ImportError:
    solvers = {'metajax': metajax_solver}
  rows = []
  for ways in map(int, FLAGS.ways):
    rng = np.random.default_rng(ways)
    # Features on the scale of a trained Conv4 embedding's (norm about 10).
    features = rng.normal(size=(FLAGS.batch, ways, FLAGS.dim)) * 1.2
    labels = np.tile(rng.permutation(ways), (FLAGS.batch, 1))
    direction = rng.normal(size=(FLAGS.batch, ways, ways))
    exact = lambda x, y, c: metajax_solver(x, y, c, 100000, 1e-12)
    jax.config.update('jax_enable_x64', True)  # the reference only; the solvers run in float32
    _, ref_alpha, ref_grad = measure(exact, jnp.asarray(features, jnp.float64),
                                     jnp.asarray(labels), jnp.asarray(direction), FLAGS.svm_c, 1)
    jax.config.update('jax_enable_x64', False)
    for name, solver in solvers.items():
      seconds, alpha, grad = measure(solver, jnp.asarray(features, jnp.float32),
                                     jnp.asarray(labels), jnp.asarray(direction, jnp.float32),
                                     FLAGS.svm_c, FLAGS.repeats)
      cosine = float(np.vdot(grad, ref_grad) / np.linalg.norm(grad) / np.linalg.norm(ref_grad))
      row = {'solver': name, 'ways': ways, 'batch': FLAGS.batch, 'ms_per_batch': seconds * 1e3,
             'alpha_max_error': float(np.abs(alpha - ref_alpha).max()),
             'grad_cosine_to_reference': cosine}
      print(json.dumps(row), flush=True)
      rows.append(row)
  print(f'\n{"solver":8} {"ways":>4} {"ms/batch":>9} {"|alpha err|":>11} {"grad cos":>9}')
  for r in rows:
    print(f'{r["solver"]:8} {r["ways"]:4d} {r["ms_per_batch"]:9.1f} '
          f'{r["alpha_max_error"]:11.2e} {r["grad_cosine_to_reference"]:9.6f}')


if __name__ == '__main__':
  app.run(main)
