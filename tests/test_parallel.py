"""Task sharding over a device mesh: 8 (forced host) devices against 1."""

import os
import socket
import subprocess
import sys
import textwrap

from absl.testing import absltest
import numpy as np
import pytest

from tests.helpers import REPO

SCRIPT = textwrap.dedent('''
    import os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=' + sys.argv[1]
    import jax, numpy as np, optax
    from metajax import loop, parallel, rundir, step as step_lib
    from metajax.config import Config
    from metajax.losses import cross_entropy
    from metajax.models import Conv4
    from tests import helpers
    from tests.helpers import image_tasks
    mode, out = sys.argv[2], sys.argv[3]
    assert jax.device_count() == int(sys.argv[1])
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    if mode == 'run':  # the real training loop, MAML on sinusoid, with checkpoints
      config = Config(num_steps=20, log_every=10, checkpoint_every=10, eval_tasks=50,
                      hidden=(16, 16), meta_batch_size=8, eval_inner_steps=(1,))
      result = loop.train_and_evaluate(config, out, show_progress=False)
      np.save(out + '.npy', flat(result.state.theta))
    elif mode == 'refuse':
      try:
        parallel.shard_tasks(parallel.make_mesh(), image_tasks(num_tasks=6))
      except ValueError as e:
        print(e)
    elif mode == 'load':  # restore a run saved by another process
      _, state = rundir.load_run(out)
      np.save(out + '.loaded.npy', flat(state.theta))
    else:  # protonet or maml on image tasks, 20 meta-steps, mesh when > 1 device
      learner = helpers.learner(mode, model=Conv4(out=3, channels=(8,) * 4),
                                loss_fn=cross_entropy, dataset='omniglot',
                                **helpers.usable(mode, inner_lr=0.1, inner_steps=1))
      # SGD: a conv bias before batch norm has an exactly-zero gradient up to
      # rounding, which Adam would scale up to full-size steps of noise.
      opt = optax.sgd(0.01)
      tasks = image_tasks(num_tasks=8, ways=3, shots=1, query=2)
      state = step_lib.create_train_state(learner, opt, jax.random.PRNGKey(0),
                                          jax.tree.map(lambda v: v[0], tasks))
      mesh = parallel.make_mesh() if jax.device_count() > 1 else None
      chunk = 8 if mode == 'maml' else 0  # maml: the scan over chunks, sharded
      step = step_lib.make_meta_train_step(learner, opt, task_chunk=chunk, mesh=mesh)
      if mesh is not None:
        state = parallel.replicate(mesh, state)
      for i in range(20):
        batch = tasks._replace(support=tasks.support._replace(x=tasks.support.x + 0.01 * i),
                               query=tasks.query._replace(x=tasks.query.x + 0.01 * i))
        key = jax.random.PRNGKey(i)
        if mesh is not None:
          batch, key = parallel.shard_tasks(mesh, batch), parallel.replicate(mesh, key)
        state, _ = step(state, batch, key)
      np.save(out + '.npy', flat(state.theta))
    print('ok', jax.device_count())
''')


PROCESS = textwrap.dedent('''
    import sys
    import jax, numpy as np
    from metajax import loop
    from metajax.config import Config
    n, pid, port, workdir, steps = sys.argv[1:6]
    n, pid = int(n), int(pid)
    multi = dict(coordinator_address=f'127.0.0.1:{port}', num_processes=n,
                 process_id=pid) if n > 1 else {}
    config = Config(num_steps=int(steps), log_every=10, checkpoint_every=10, eval_tasks=50,
                    hidden=(16, 16), meta_batch_size=8, eval_inner_steps=(1,), **multi)
    result = loop.train_and_evaluate(config, workdir, show_progress=False)
    np.save(f'{workdir}.{pid}.npy', np.concatenate(
        [np.ravel(np.asarray(x.addressable_data(0))) for x in jax.tree.leaves(result.state.theta)]))
    assert jax.process_count() == n
''')


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_processes(n, workdir, steps):
  """`n` processes joined by jax.distributed on 127.0.0.1 (CPU collectives: gloo)."""
  env = {**os.environ, 'PYTHONPATH': REPO}
  env.pop('XLA_FLAGS', None)
  port = free_port()
  procs = [subprocess.Popen([sys.executable, '-c', PROCESS, str(n), str(p), str(port), workdir,
                             str(steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO) for p in range(n)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]


def run(devices, mode, out):
  env = {**os.environ, 'PYTHONPATH': REPO}
  env.pop('XLA_FLAGS', None)
  done = subprocess.run([sys.executable, '-c', SCRIPT, str(devices), mode, out],
                        capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


class ShardingTest(absltest.TestCase):

  @pytest.mark.slow
  @pytest.mark.long
  def test_eight_devices_equal_one_for_maml_and_protonet(self):
    tmp = self.create_tempdir().full_path
    for mode in ('protonet', 'maml'):
      one, eight = os.path.join(tmp, f'{mode}1'), os.path.join(tmp, f'{mode}8')
      run(1, mode, one)
      run(8, mode, eight)
      a, b = np.load(one + '.npy'), np.load(eight + '.npy')
      np.testing.assert_allclose(b, a, atol=1e-5, err_msg=mode)
      self.assertGreater(np.abs(a).sum(), 0)

  @pytest.mark.slow
  def test_training_loop_on_eight_devices_and_restore_on_one(self):
    tmp = self.create_tempdir().full_path
    one, eight = os.path.join(tmp, 'one'), os.path.join(tmp, 'eight')
    run(1, 'run', one)
    run(8, 'run', eight)
    np.testing.assert_allclose(np.load(eight + '.npy'), np.load(one + '.npy'), atol=1e-5)
    run(1, 'load', eight)  # a checkpoint saved on 8 devices restores on 1
    np.testing.assert_array_equal(np.load(eight + '.loaded.npy'), np.load(eight + '.npy'))

  @pytest.mark.slow
  @pytest.mark.long
  def test_two_processes_equal_one_and_resume_together(self):
    tmp = self.create_tempdir().full_path
    one, two = os.path.join(tmp, 'one'), os.path.join(tmp, 'two')
    run_processes(1, one, 20)
    run_processes(2, two, 20)
    a, b0, b1 = (np.load(f'{d}.{p}.npy') for d, p in ((one, 0), (two, 0), (two, 1)))
    np.testing.assert_allclose(b0, a, atol=1e-5)
    np.testing.assert_array_equal(b0, b1)  # every process holds the same meta-parameters
    self.assertEqual(sorted(os.listdir(os.path.join(two, 'checkpoints'))), ['10', '20'])
    with open(os.path.join(two, 'metrics.jsonl')) as f:
      self.assertLen(f.read().splitlines(), 2)  # one writer: process 0
    run_processes(2, two, 30)  # both resume from the multi-process checkpoint
    run_processes(1, one, 30)
    np.testing.assert_allclose(np.load(f'{two}.0.npy'), np.load(f'{one}.0.npy'), atol=1e-5)

  def test_meta_batch_that_does_not_divide_is_refused(self):
    out = run(8, 'refuse', self.create_tempdir().full_path).stdout
    self.assertIn('meta_batch_size=6 does not divide over the 8 devices', out)
    from metajax import parallel  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(ValueError, r'^mesh_shape=4: needs 4 devices'):
      parallel.make_mesh((4,))
