"""Settings: the registries, algorithm defaults, validation naming flags, flags, old run configs."""

import json
import os

from absl import flags
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import optax

from metajax import cli
from metajax import rundir
from metajax.algorithms import ALGORITHMS, registry
from metajax.config import Config
from metajax.data import DATASETS
from metajax.optimizers import INNER_OPTIMIZERS
from metajax.run import build_run
from metajax.validation import ALGORITHM_SETTINGS

# One valid non-default value of each algorithm setting.
SOME_VALUE = {'inner_lr': 0.05, 'inner_steps': 3, 'inner_optimizer': 'momentum', 'remat': True,
              'backprop_steps': 1, 'imaml_lambda': 2.0, 'cg_steps': 4, 'predictor_head': 'dot',
              'finetune_head': 'cosine', 'pretrain_classes': 10, 'msl_steps': 7,
              'first_order_steps': 9, 'per_step_bn': False, 'learn_inner_lr': False,
              'zero_head': True}


def dataset_for(name):
  return 'sinusoid' if 'regression' in ALGORITHMS[name].tasks else 'omniglot'


class RegistryTest(parameterized.TestCase):

  def test_settings_cover_every_algorithm_setting_field(self):
    self.assertEqual(set(SOME_VALUE), set(ALGORITHM_SETTINGS))

  def test_every_dataset_registers_a_consistent_spec(self):
    self.assertEqual(list(DATASETS),
                     ['sinusoid', 'omniglot', 'miniimagenet', 'folders', 'tfds'])
    for name, spec in DATASETS.items():
      config = Config(dataset=name, ways=3 if spec.task == 'classification' else None, shots=2)
      task = spec.example_task(config)
      self.assertEqual(task.support.x.shape, (6 if config.ways else 2,) + spec.shape(config), name)
      kind = jnp.integer if spec.task == 'classification' else jnp.floating
      self.assertTrue(jnp.issubdtype(task.support.y.dtype, kind), name)

  def test_names_are_registered_once_and_unknown_names_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, r"^name='maml': algorithm of that name is registered already"):
      registry.register(ALGORITHMS['maml'])
    with self.assertRaisesRegex(ValueError, r"^algorithm='mamll': choose one of maml, fomaml"):
      registry.get('mamll')

  def test_capabilities_are_derived_from_the_settings(self):
    self.assertTrue(ALGORITHMS['maml'].truncatable)
    self.assertFalse(ALGORITHMS['reptile'].truncatable)
    self.assertFalse(ALGORITHMS['protonet'].adapts)
    self.assertTrue(ALGORITHMS['predictor'].adapts)


class DefaultsTest(parameterized.TestCase):

  def test_an_algorithm_gets_its_own_defaults_and_flags_override_them(self):
    finetune = Config(algorithm='finetune', dataset='omniglot').resolve()
    self.assertEqual((finetune.inner_steps, finetune.inner_lr, finetune.inner_optimizer,
                      finetune.finetune_head, finetune.eval_inner_steps),
                     (100, 0.01, 'adam', 'linear', (100,)))
    self.assertEqual(Config(algorithm='finetune', dataset='omniglot',
                            inner_steps=5).resolve().inner_steps, 5)
    reptile = Config(algorithm='reptile').resolve()
    self.assertEqual((reptile.inner_steps, reptile.inner_lr), (5, 0.02))
    self.assertEqual(Config().resolve().inner_lr, 0.01)  # MAML, sinusoid
    self.assertEqual(Config(dataset='omniglot').resolve().inner_lr, 0.4)  # MAML, Omniglot
    maml_mini = Config(dataset='miniimagenet').resolve()
    self.assertEqual((maml_mini.inner_lr, maml_mini.inner_steps), (0.01, 5))
    self.assertEqual(Config().resolve().eval_inner_steps, (0, 1, 10))
    protonet = Config(algorithm='protonet', dataset='omniglot').resolve()
    self.assertEqual([getattr(protonet, s) for s in ALGORITHM_SETTINGS],
                     [None] * len(ALGORITHM_SETTINGS))

  def test_the_run_directory_records_the_values_used(self):
    run = build_run(Config(algorithm='reptile', hidden=(8,)), data=False)
    workdir = self.create_tempdir().full_path
    rundir.write_config(run.config, workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertEqual((saved['inner_steps'], saved['inner_lr'], saved['inner_optimizer']),
                     (5, 0.02, 'sgd'))
    with open(os.path.join(workdir, 'flags.txt')) as f:
      self.assertIn('--inner_steps=5', f.read().splitlines())

  def test_help_shows_each_algorithms_defaults(self):
    values = flags.FlagValues()
    cli.define_config_flags(values)
    self.assertIn('maml 0.01, omniglot 0.4', values['inner_lr'].help)
    self.assertIn('finetune 100', values['inner_steps'].help)
    for name in ALGORITHMS:
      self.assertIn(f'{name}: ', values['algorithm'].help)


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(*ALGORITHMS)
  def test_a_setting_the_algorithm_does_not_use_is_an_error_naming_the_flag(self, name):
    spec, dataset = ALGORITHMS[name], dataset_for(name)
    for setting in ALGORITHM_SETTINGS:
      config = Config(algorithm=name, dataset=dataset, **{setting: SOME_VALUE[setting]})
      if setting in spec.settings:
        config.resolve()  # accepted
      else:
        with self.assertRaisesRegex(ValueError, rf'^--{setting}=.*--algorithm={name} does '
                                    'not use it'):
          config.validate()

  @parameterized.parameters(
      (dict(inner_optimizer='lbfgs'), "--inner_optimizer='lbfgs': choose one of sgd, momentum, "
       'adam'),
      (dict(algorithm='mamll'), "--algorithm='mamll': choose one of maml, fomaml"),
      (dict(dataset='imagenet'), "--dataset='imagenet': choose one of sinusoid, omniglot"),
      (dict(algorithm='protonet'), "--algorithm='protonet': protonet handles classification "
       'tasks; --dataset=sinusoid has regression tasks'),
      (dict(dataset='omniglot', model='mlp'), "--model='mlp': choose one of conv4, resnet12"),
      (dict(dataset='omniglot', data_source='hub'), "--data_source='hub': choose one of files"),
      (dict(dataset='omniglot', split='random'), "--split='random': choose one of vinyals"),
      (dict(dataset='omniglot', train_ways=20), '--train_ways=20: only protonet and predictor '
       'and finetune can train'),
      (dict(inner_steps=0), '--inner_steps=0: must be a positive integer'),
      (dict(meta_batch_size=6, task_chunk=4), '--task_chunk=4: --meta_batch_size=6 is not'),
      (dict(eval_inner_steps=(1, -1)), '--eval_inner_steps=1,-1: must be a non-empty list'),
      (dict(dataset='omniglot', augment=True), '--augment=True: Omniglot augmentation'),
  )
  def test_bad_settings_name_the_flag_and_value(self, changes, message):
    with self.assertRaises(ValueError) as e:
      Config(**changes).validate()
    self.assertTrue(str(e.exception).startswith(message), str(e.exception))

  def test_zero_inner_steps_for_a_model_based_learner(self):
    self.assertEqual(Config(algorithm='predictor', inner_steps=0).resolve().inner_steps, 0)

  def test_library_errors_in_flag_words(self):
    error = ValueError('shots=15 plus query=6 is 21 images; workdir=/x; --ways=3 stays; '
                       'num_steps=3')
    self.assertEqual(cli.flag_words(error), '--shots=15 plus --query=6 is 21 images; '
                     '--workdir=/x; --ways=3 stays; --num_steps=3')


class OptimizerTest(parameterized.TestCase):

  @parameterized.parameters(('sgd', optax.sgd(0.1)), ('momentum', optax.sgd(0.1, momentum=0.9)),
                            ('adam', optax.adam(0.1, eps_root=1e-12)))
  def test_inner_optimizer_strings_become_these_optax_transformations(self, name, expected):
    params = {'w': jnp.array([1.0, -2.0, 0.0])}
    grads = {'w': jnp.array([0.3, 0.0, -1.0])}
    got, want = INNER_OPTIMIZERS[name](0.1), expected
    s1, s2 = got.init(params), want.init(params)
    for _ in range(2):  # two steps: the state matters
      u1, s1 = got.update(grads, s1, params)
      u2, s2 = want.update(grads, s2, params)
      np.testing.assert_array_equal(u1['w'], u2['w'])


class OldRunConfigTest(parameterized.TestCase):

  def test_a_config_json_written_before_the_registry_loads(self):
    # Before the registry every setting was stored, used or not (metajax 0.1.0).
    old = {'algorithm': 'protonet', 'dataset': 'omniglot', 'ways': 5, 'shots': 1, 'query': 5,
           'inner_steps': 1, 'inner_lr': 0.01, 'inner_optimizer': 'sgd', 'remat': False,
           'backprop_steps': None, 'imaml_lambda': 1.0, 'cg_steps': 5,
           'predictor_head': 'cosine', 'finetune_head': 'linear', 'pretrain_classes': None,
           'eval_inner_steps': [0, 1, 10], 'hidden': [40, 40], 'mesh_shape': []}
    config = Config.from_dict(old).resolve()
    self.assertEqual([getattr(config, s) for s in ALGORITHM_SETTINGS],
                     [None] * len(ALGORITHM_SETTINGS))
    self.assertEqual((config.algorithm, config.shots, config.eval_inner_steps),
                     ('protonet', 1, (0, 1, 10)))
    maml = Config.from_dict({**old, 'algorithm': 'maml', 'inner_lr': 0.4}).resolve()
    self.assertEqual((maml.inner_lr, maml.remat, maml.cg_steps), (0.4, False, None))
    with self.assertRaisesRegex(ValueError, 'unknown config fields'):
      Config.from_dict({**old, 'inner_rate': 0.1})

  def test_build_without_data_needs_the_settings_that_come_from_data(self):
    with self.assertRaisesRegex(ValueError, '--pretrain_classes comes from the data'):
      build_run(Config(algorithm='finetune', dataset='omniglot'), data=False)
    run = build_run(Config(algorithm='finetune', dataset='omniglot', pretrain_classes=12,
                           channels=4), data=False)
    theta = run.init_state().theta
    self.assertEqual(theta['classifier']['kernel'].shape, (4, 12))
    self.assertIsNone(run.source)
