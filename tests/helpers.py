"""Plain builders shared by the tests: tiny tasks, learners, data fixtures, script runs.

pytest fixtures and markers live in conftest.py; this module holds the
functions that tests call directly. No test module imports another.
"""

import csv
import glob
import os
import pickle
import subprocess
import sys
from unittest import mock
import zipfile

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metajax import loop, rundir
from metajax import settings as settings_lib
from metajax.algorithms import ALGORITHMS
from metajax.config import Config
from metajax.data import omniglot
from metajax.data.sinusoid import SinusoidFamily
from metajax.losses import mse
from metajax.models import MLP
from metajax.types import Split, Task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.PRNGKey(0)
# The real Omniglot release, where $METAJAX_OMNIGLOT_DIR points (tests marked
# `omniglot` are skipped without it; see conftest.py).
OMNIGLOT_DIR = os.environ.get(omniglot.ENV_DATA_DIR)
HAVE_OMNIGLOT = bool(OMNIGLOT_DIR) and all(
    os.path.isfile(os.path.join(OMNIGLOT_DIR, a)) for a in omniglot.ARCHIVES)


def sinusoid_tasks(seed=0, num_tasks=4, shots=5, query=5, dtype=jnp.float32):
  tasks = SinusoidFamily().sample(jax.random.PRNGKey(seed), num_tasks, shots, query)
  return jax.tree.map(lambda v: v.astype(dtype), tasks)


def first(tasks):
  return jax.tree.map(lambda v: v[0], tasks)


def learner(name='maml', hidden=(8, 8), model=None, loss_fn=mse, dataset=None, **settings):
  """The learner `name` on an MLP, from its own settings (its defaults on `dataset`)."""
  return ALGORITHMS[name].learner(model or MLP(hidden=hidden), loss_fn, dataset, **settings)


def usable(name, **settings):
  """The settings that algorithm `name` reads (others would be refused)."""
  return {k: v for k, v in settings.items()
          if k in settings_lib.names(ALGORITHMS[name].settings)}


def init(learner_, tasks, seed=1, dtype=jnp.float32):
  theta = learner_.init(jax.random.PRNGKey(seed), first(tasks))
  return jax.tree.map(lambda v: v.astype(dtype), theta)


def fake_images(characters=30, drawings=20):
  """Image c, d holds c in pixel (0, 0), d in pixel (0, 1), and an L-shaped mark."""
  images = np.zeros((characters, drawings, 8, 8), np.uint8)
  for c in range(characters):
    for d in range(drawings):
      images[c, d, 0, 0], images[c, d, 0, 1] = c, d
      images[c, d, 5:, 6] = 255
      images[c, d, 7, 3:7] = 255
  return images


def make_subset(data_dir, out_dir, alphabets=2, extract=False):
  """Official-layout zips (or folders) holding the first `alphabets` alphabets of each set."""
  os.makedirs(out_dir, exist_ok=True)
  for archive in omniglot.ARCHIVES:
    with zipfile.ZipFile(os.path.join(data_dir, archive)) as src:
      names = sorted(n for n in src.namelist() if n.endswith('.png'))
      keep = sorted({n.split('/')[1] for n in names})[:alphabets]
      names = [n for n in names if n.split('/')[1] in keep]
      if extract:
        src.extractall(out_dir, members=names)
      else:
        with zipfile.ZipFile(os.path.join(out_dir, archive), 'w') as dst:
          for n in names:
            dst.writestr(n, src.read(n))
  return out_dir


def image_tasks(num_tasks=2, ways=3, shots=1, query=2, size=28):
  """Random 28x28 image tasks, `ways` classes, labels in order."""
  k1, k2 = jax.random.split(KEY)
  xs = jax.random.uniform(k1, (num_tasks, ways * shots, size, size, 1))
  xq = jax.random.uniform(k2, (num_tasks, ways * query, size, size, 1))
  ys = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 1))
  yq = jnp.tile(jnp.repeat(jnp.arange(ways), query), (num_tasks, 1))
  return Task(Split(xs, ys), Split(xq, yq))


CLASSES = {'train': 5, 'val': 3, 'test': 4}
PER_CLASS = 10
SUBSET_CODES = {'train': 1, 'val': 2, 'test': 3}


def make_fixture(root: str, layout: str) -> str:
  """A tiny miniImageNet in the CSV + images/ layout or the pickle layout.

  Every class has a colour; images are that colour plus noise, so a few-shot
  learner can tell the classes apart. Both layouts hold the same pixels.
  """
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for subset, count in CLASSES.items():
    names, images = [], []
    for c in range(count):
      wnid = f'n{SUBSET_CODES[subset]}{c:07d}'
      colour = rng.integers(0, 256, size=3)
      for i in range(PER_CLASS):
        noise = rng.integers(-40, 41, size=(84, 84, 3))
        images.append(np.clip(colour + noise, 0, 255).astype(np.uint8))
        names.append((f'{wnid}{i:08d}.png', wnid))
    if layout == 'csv':
      os.makedirs(os.path.join(root, 'images'), exist_ok=True)
      with open(os.path.join(root, f'{subset}.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['filename', 'label'])
        for (name, wnid), image in zip(names, images):
          Image.fromarray(image).save(os.path.join(root, 'images', name))
          writer.writerow([name, wnid])
    else:
      class_dict = {}
      for row, (_, wnid) in enumerate(names):
        class_dict.setdefault(wnid, []).append(row)
      with open(os.path.join(root, f'mini-imagenet-cache-{subset}.pkl'), 'wb') as f:
        pickle.dump({'image_data': np.stack(images), 'class_dict': class_dict}, f)
  return root


def script(name, *args, env=None, **kwargs):
  """Runs `experiments/<name>` with `args` in a subprocess, as a user would.

  `env`: the environment (default: this one), to which metajax's folder is added.
  """
  env = dict(os.environ if env is None else env)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.run([sys.executable, os.path.join(REPO, 'experiments', name), *args],
                        capture_output=True, text=True, env=env, timeout=600, **kwargs)


def checkpoints(workdir):
  """The checkpoint steps saved in `workdir`."""
  path = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(path):
    return []
  return sorted(int(s) for s in os.listdir(path) if s.isdigit())


def omniglot_folders(root: str, characters: int = 200, flat: bool = False) -> str:
  """A class-folder tree `root/<Alphabet>/<character>/<drawing>.png` of real Omniglot.

  The first `characters` characters of the official evaluation set, their
  105x105 drawings copied byte for byte from `images_evaluation.zip`;
  `flat=True`: `root/<Alphabet>_<character>/<drawing>.png`.
  """
  with zipfile.ZipFile(os.path.join(OMNIGLOT_DIR, 'images_evaluation.zip')) as archive:
    names = sorted(n for n in archive.namelist() if n.endswith('.png'))
    kept = sorted({n.split('/')[1] + '/' + n.split('/')[2] for n in names})[:characters]
    for name in names:
      _, alphabet, character, file = name.split('/')
      if f'{alphabet}/{character}' in kept:
        folder = (os.path.join(root, f'{alphabet}_{character}') if flat
                  else os.path.join(root, alphabet, character))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, file), 'wb') as f:
          f.write(archive.read(name))
  return root


def class_folders(root, names, per_class=6, seed=0):
  """Class folders `root/<name>/<i>.png` of 10x12 gray images, each class its own grey level."""
  rng = np.random.default_rng(seed)
  for name in names:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    level = int(rng.integers(0, 256))
    for i in range(per_class):
      pixels = np.clip(level + rng.integers(-20, 21, size=(10, 12)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, name, f'{i}.png'))
  return root


class Float64TestCase(parameterized.TestCase):
  """A test case whose tests run with `jax_enable_x64` (float64 gradient checks)."""

  def setUp(self):
    super().setUp()
    jax.config.update('jax_enable_x64', True)

  def tearDown(self):
    jax.config.update('jax_enable_x64', False)
    super().tearDown()


def gaussian_task(ways=3, shots=2, query=2, dim=5, seed=0, dtype=np.float64) -> Task:
  """A task of standard-normal inputs [n, dim]; row i of each split has label i % ways."""
  rng = np.random.default_rng(seed)
  labels = lambda n: jnp.asarray(np.arange(ways * n) % ways)
  split = lambda n: Split(jnp.asarray(rng.normal(size=(ways * n, dim)).astype(dtype)), labels(n))
  return Task(split(shots), split(query))


def check_padding_changes_nothing(learner, task: Task, key, loss_rtol=1e-12, grad_rtol=1e-10,
                                  grad_atol=1e-14):
  """Two padded support rows (mask False) change neither the meta-loss nor its gradient.

  Run in float64 (`Float64TestCase`).
  """
  theta = jax.tree.map(lambda v: v.astype(jnp.float64), learner.init(key, task))
  pad = lambda a, value: jnp.concatenate([a, jnp.full((2,) + a.shape[1:], value, a.dtype)])
  size = task.support.x.shape[0]
  support = Split(pad(task.support.x, 7.0), pad(task.support.y, 0), jnp.arange(size + 2) < size)
  query = Split(task.query.x, task.query.y, jnp.ones(task.query.x.shape[0], bool))
  loss = lambda th, tk: learner.outer_loss(th, tk, key)[0]
  (padded_loss, padded_grads), (loss_, grads) = [
      jax.value_and_grad(loss)(theta, tk) for tk in (Task(support, query), task)]
  np.testing.assert_allclose(padded_loss, loss_, rtol=loss_rtol)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=grad_rtol, atol=grad_atol),
               padded_grads, grads)


def check_gradient(loss, theta, seed=0, eps=1e-6, rtol=1e-7):
  """`jax.grad(loss)(theta)` against central differences of `loss` along a random direction.

  Run in float64 (`Float64TestCase`). Returns the gradient, for further checks.
  """
  grads = jax.grad(loss)(theta)
  leaves, tree = jax.tree.flatten(theta)
  rng = np.random.default_rng(seed)
  direction = tree.unflatten([jnp.asarray(rng.normal(size=np.shape(v))) for v in leaves])
  shifted = lambda sign: jax.tree.map(lambda v, u: v + sign * eps * u, theta, direction)
  numeric = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
  analytic = sum(jnp.vdot(g, u) for g, u in zip(jax.tree.leaves(grads),
                                                jax.tree.leaves(direction)))
  np.testing.assert_allclose(analytic, numeric, rtol=rtol)
  return grads


def check_folders_run(test, algorithm: str, **settings):
  """`algorithm` trains 2 steps on tiny class folders, resumes to 4, evaluates and predicts files.

  The 2-way 1-shot run's learner, loaded from its run directory by
  `load_learner`, names one of the support's classes for each query file.
  """
  tmp = test.create_tempdir().full_path
  data = class_folders(os.path.join(tmp, 'data'), [f'class{c}' for c in range(10)])
  workdir = os.path.join(tmp, 'run')
  config = lambda steps: Config(dataset=f'folders:{data}', algorithm=algorithm, ways=2,
                                shots=1, query=2, meta_batch_size=2, channels=4,
                                num_steps=steps, checkpoint_every=2, eval_tasks=10, **settings)
  with mock.patch.dict(os.environ, {'METAJAX_CACHE_DIR': os.path.join(tmp, 'cache')}):
    loop.train_and_evaluate(config(2), workdir, show_progress=False)
    result = loop.train_and_evaluate(config(4), workdir, show_progress=False)  # resumed
    test.assertEqual((result.times['steps'], int(result.state.step)), (2, 4))
    (record,) = result.records
    test.assertEqual((record['algorithm'], record['num_tasks']), (algorithm, 10))
    learner = rundir.load_learner(workdir)
    test.assertEqual(learner.step, 4)
    names = result.run.source.class_names('test')[:2]
    files = [sorted(glob.glob(os.path.join(data, n, '*.png'))) for n in names]
    predicted = learner.predict([f[0] for f in files], names, [f[1] for f in files])
  test.assertEqual(len(predicted), 2)
  test.assertTrue(set(predicted) <= set(names))
