"""Baseline / Baseline++ (pre-train, then fine-tune a head) and resumption of new learners."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import optax
import pytest

from metajax import algorithms
from metajax import loop
from metajax import rundir
from metajax.algorithms.common import head_logits
from metajax.algorithms.finetune import COSINE_SCALE
from metajax.algorithms import ALGORITHMS
from metajax.config import Config, RunSettings
from metajax.data import episodes
from metajax.losses import accuracy, cross_entropy
from metajax.run import Run
from metajax.types import Split, Task
from tests.helpers import CLASSES, fake_images, make_fixture

KEY = jax.random.PRNGKey(0)


class Flatten(nn.Module):
  """A backbone that passes its inputs through (plus one unused parameter)."""

  @nn.compact
  def embed(self, x):
    self.param('unused', nn.initializers.zeros, (1,))
    return x.reshape(x.shape[0], -1)


def separable_task(ways=5, shots=3, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 3, (ways, dim))
  x = np.concatenate([centres[c] + rng.normal(0, 0.5, (shots, dim)) for c in range(ways)])
  y = np.repeat(np.arange(ways), shots).astype(np.int32)
  return Task(Split(jnp.asarray(x, jnp.float32), jnp.asarray(y)),
              Split(jnp.asarray(x, jnp.float32), jnp.asarray(y)))


class HeadTest(parameterized.TestCase):

  @parameterized.parameters('linear', 'cosine')
  def test_head_fits_separable_support_to_100_percent(self, head):
    learner = algorithms.finetune(Flatten(), cross_entropy, pretrain_classes=7,
                                  inner_optimizer=optax.adam(0.05), inner_steps=100, finetune_head=head)
    task = separable_task()
    theta = learner.init(KEY, task)
    self.assertEqual(theta['classifier']['kernel'].shape, (16, 7))
    logits = learner.predict(theta, task.support, task.support.x, KEY)
    self.assertEqual(logits.shape, (15, 15))  # one column per support example
    self.assertEqual(float(accuracy(logits, task.support.y)), 1.0)
    self.assertTrue(np.all(np.asarray(logits[:, 5:]) == -1e9))
    untrained = learner.predict(theta, task.support, task.support.x, KEY, num_steps=0)
    self.assertLess(float(accuracy(untrained, task.support.y)), 1.0)

  def test_head_logits_equal_an_independent_computation(self):
    rng = np.random.default_rng(3)
    features, kernel = rng.normal(size=(6, 5)), rng.normal(size=(5, 4))
    head = {'kernel': jnp.asarray(kernel), 'bias': jnp.zeros(4)}
    expected = np.array([[COSINE_SCALE * f @ kernel[:, c] / np.linalg.norm(f)
                          / np.linalg.norm(kernel[:, c]) for c in range(4)] for f in features])
    x, w = jnp.asarray(features), jnp.asarray(kernel)
    np.testing.assert_allclose(head_logits('cosine', x, w, scale=COSINE_SCALE), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(head_logits('linear', x, w, head['bias']), features @ kernel,
                               rtol=1e-5)
    np.testing.assert_allclose(head_logits('dot', x, w), features @ kernel, rtol=1e-5)
    distances = ((features[:, None, :] - kernel.T[None]) ** 2).sum(-1)
    np.testing.assert_allclose(head_logits('euclidean', x, w), -distances, rtol=1e-4)

  def test_bad_settings_name_their_argument_or_flag(self):
    with self.assertRaisesRegex(ValueError, r"^finetune_head='svm': choose one of linear, cosine"):
      algorithms.finetune(Flatten(), cross_entropy, pretrain_classes=3, finetune_head='svm')
    with self.assertRaisesRegex(ValueError, r"--finetune_head='svm'"):
      ALGORITHMS['finetune'].section(finetune_head='svm')
    with self.assertRaisesRegex(ValueError, r"--algorithm='finetune'.*sinusoid"):
      Config(algorithm='finetune').validate()
    with self.assertRaisesRegex(ValueError, r'--warmup_steps=50'):
      RunSettings(lr_schedule='warmup_cosine', warmup_steps=50, num_steps=50).validate()


class SupervisedBatchTest(parameterized.TestCase):

  def test_labelled_batch_labels_are_the_classes_of_the_images(self):
    classes = np.stack(np.meshgrid(np.arange(30), np.arange(4), indexing='ij'), -1).reshape(-1, 2)
    sampler = episodes.EpisodeSampler(fake_images(), classes, 5, 1, 1, seed=0)
    x, y = sampler.labelled_batch(3, 64)
    self.assertEqual(x.shape, (64, 8, 8, 1))
    for image, label in zip(np.round(x[..., 0] * 255).astype(int), y):
      character, turns = classes[label]
      canonical = np.rot90(image, -turns)
      self.assertEqual(canonical[0, 0], character)
      self.assertEqual(canonical[7, 3:7].min(), 255)  # the mark is upright after un-rotating
    again = sampler.labelled_batch(3, 64)
    np.testing.assert_array_equal(x, again[0])
    self.assertFalse(np.array_equal(y, sampler.labelled_batch(4, 64)[1]))
    self.assertGreater(len(set(y.tolist())), 30)  # drawn across the classes


def _run(config, workdir):
  return loop.train_and_evaluate(config, workdir, show_progress=False)


class Killed(Exception):
  pass


def _run_until_killed(config, workdir, step):
  """Runs `config` in `workdir` and stops it dead when batch `step` is requested."""
  original = Run.train_batches

  def killing(run, start, stop, share=None):
    for i, batch in zip(range(start, stop), original(run, start, stop, share)):
      if i == step:
        raise Killed(i)
      yield batch

  with absltest.mock.patch.object(Run, 'train_batches', killing):
    try:
      loop.train_and_evaluate(config, workdir, show_progress=False)
    except Killed:
      pass
    else:
      raise AssertionError('the run was not stopped')
  assert not os.path.exists(os.path.join(workdir, 'eval.json'))


class TrainResumeTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_finetune_pretrains_evaluates_loads_and_resumes(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    config = Config(dataset='miniimagenet', algorithm='finetune', ways=3, shots=1, query=3,
                    meta_batch_size=16, channels=8, num_steps=20, log_every=5,
                    checkpoint_every=10, eval_tasks=20, eval_inner_steps=(30,),
                    inner_steps=30, inner_lr=0.05, inner_optimizer='adam',
                    meta_optimizer='adamw', lr_schedule='warmup_cosine', warmup_steps=5,
                    data_dir=data_dir, augment=True)
    straight = _run(config, self.create_tempdir().full_path)
    self.assertEqual(straight.config.pretrain_classes, CLASSES['train'])
    (record,) = straight.records
    self.assertEqual((record['metric'], record['inner_steps']), ('accuracy', 30))
    self.assertGreater(record['mean'], 1 / 3)

    workdir = self.create_tempdir().full_path
    _run_until_killed(config, workdir, 13)  # checkpoint at step 10, killed at 13
    with self.assertRaisesRegex(rundir.ConfigMismatchError, r'--num_steps=20 there, 40 here'):
      _run(config.replace(num_steps=40), workdir)  # the schedule spans --num_steps
    resumed = _run(config, workdir)
    chex.assert_trees_all_close(resumed.state.theta, straight.state.theta, rtol=1e-6)
    self.assertEqual(resumed.records, straight.records)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['algorithm']['pretrain_classes'], CLASSES['train'])

    trained = rundir.load_learner(workdir)  # needs no data: the class count is in config.json
    rng = np.random.default_rng(0)
    support = rng.integers(0, 256, (4, 84, 84, 3), dtype=np.uint8)
    labels = trained.predict(support, [7, 7, 9, 9], support)
    self.assertTrue(set(labels.tolist()) <= {7, 9})

  @pytest.mark.slow
  def test_predictor_resumes_exactly(self):
    config = Config(algorithm='predictor', inner_steps=1, num_steps=40, log_every=10,
                    checkpoint_every=20, eval_tasks=50, hidden=(16, 16), meta_batch_size=4)
    straight = _run(config, self.create_tempdir().full_path)
    workdir = self.create_tempdir().full_path
    _run_until_killed(config, workdir, 27)
    resumed = _run(config, workdir)
    chex.assert_trees_all_close(resumed.state.theta, straight.state.theta, rtol=1e-6)
    self.assertEqual(resumed.records, straight.records)
