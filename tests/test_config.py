"""Settings: declared once per part, resolved in layers, validated, recorded, read back."""

import json
import os
import re

from absl import flags
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import optax

from metajax import cli
from metajax import rundir
from metajax import settings
from metajax.algorithms import ALGORITHMS, registry
from metajax.algorithms.registry import INNER_OPTIMIZERS
from metajax.config import Config
from metajax.data import DATASETS
from metajax.run import build_run

ALGORITHM_SETTINGS = sorted({n for s in ALGORITHMS.values() for n in settings.names(s.settings)})


def some_value(name):
  """A valid value of algorithm setting `name` other than its default, from its declaration."""
  cls = next(s.settings for s in ALGORITHMS.values() if name in settings.names(s.settings))
  field, kind = settings.field(cls, name), settings.kind(cls, name)
  default, meta = field.default, field.metadata
  if meta['choices']:
    return next(c for c in meta['choices'] if c != default)
  if kind is bool:
    return not default
  if default is None:
    return max(meta['minimum'] or 0, 1)
  return default + 1 if kind is int else default * 2


def dataset_for(name):
  return 'sinusoid' if 'regression' in ALGORITHMS[name].tasks else 'omniglot'


class RegistryTest(parameterized.TestCase):

  def test_every_dataset_registers_a_consistent_spec(self):
    self.assertEqual(list(DATASETS),
                     ['sinusoid', 'omniglot', 'miniimagenet', 'folders', 'tfds'])
    for name, spec in DATASETS.items():
      classes = spec.task == 'classification'
      config = Config(dataset='tfds:mnist' if name == 'tfds' else name,  # tfds needs a name
                      ways=3 if classes else None, shots=2,
                      **({'data_dir': '/x'} if name == 'folders' else {}))
      task = spec.example_task(config.sections['dataset'], config.ways, config.shots)
      shape = spec.shape(config.sections['dataset'])
      self.assertEqual(task.support.x.shape, (6 if classes else 2,) + shape, name)
      kind = jnp.integer if classes else jnp.floating
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

  def test_a_setting_declared_by_several_parts_has_one_type(self):
    values = flags.FlagValues()
    cli.define_config_flags(values)  # raises TypeError on a clash
    for name, owners in cli.declarations().items():
      self.assertLen({settings.kind(cls, name) for _, cls in owners}, 1, name)


class DefaultsTest(parameterized.TestCase):

  def test_an_algorithm_gets_its_own_defaults_and_given_values_override_them(self):
    finetune = Config(algorithm='finetune', dataset='omniglot')
    self.assertEqual((finetune.inner_steps, finetune.inner_lr, finetune.inner_optimizer,
                      finetune.finetune_head, finetune.eval_inner_steps),
                     (100, 0.01, 'adam', 'linear', (100,)))
    self.assertEqual(Config(algorithm='finetune', dataset='omniglot', inner_steps=5).inner_steps, 5)
    reptile = Config(algorithm='reptile')
    self.assertEqual((reptile.inner_steps, reptile.inner_lr), (5, 0.02))
    self.assertEqual(Config().inner_lr, 0.01)  # MAML, sinusoid
    self.assertEqual(Config(dataset='omniglot').inner_lr, 0.4)  # MAML, Omniglot
    maml_mini = Config(dataset='miniimagenet')
    self.assertEqual((maml_mini.inner_lr, maml_mini.inner_steps, maml_mini.channels),
                     (0.01, 5, 32))
    self.assertEqual(Config().eval_inner_steps, (0, 1, 10))
    protonet = Config(algorithm='protonet', dataset='omniglot')
    self.assertEqual(protonet.sections['algorithm'].to_dict(), {})
    self.assertIsNone(protonet.get('inner_lr'))

  @parameterized.parameters(
      ('maml', 'omniglot_maml_5w1s_cpu'), ('fomaml', 'omniglot_fomaml_5w1s_cpu'),
      ('mamlpp', 'omniglot_mamlpp_5w1s_cpu'), ('protonet', 'omniglot_protonet_5w1s'),
      ('predictor', 'omniglot_predictor_5w1s'), ('finetune', 'omniglot_baseline'),
      ('matching', 'omniglot_matching_5w1s'), ('r2d2', 'omniglot_r2d2_5w1s'))
  def test_naming_algorithm_and_dataset_gives_the_presets_setting(self, algorithm, preset):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments', 'configs',
                        f'{preset}.flags')
    self.assertEqual(Config(algorithm=algorithm, dataset='omniglot').validate(),
                     cli.config_from_flagfile(path))

  def test_resolution_order(self):
    # given > algorithm on dataset > algorithm > dataset > the setting's own default
    self.assertEqual(Config(dataset='omniglot', meta_batch_size=3).meta_batch_size, 3)
    self.assertEqual(Config(dataset='omniglot').meta_batch_size, 8)  # maml on omniglot
    self.assertEqual(Config(dataset='omniglot', algorithm='reptile').meta_batch_size, 32)
    self.assertEqual(Config(algorithm='mamlpp').eval_inner_steps, (5,))  # mamlpp, any dataset
    self.assertEqual(Config().meta_batch_size, 25)  # sinusoid
    # Settings that follow others follow them unless given.
    self.assertEqual(Config(shots=4).query, 4)
    self.assertEqual(Config(shots=4, query=2).eval_query, 100)
    self.assertEqual(Config(dataset='omniglot', algorithm='reptile', ways=7).train_ways, 7)
    self.assertEqual(Config(eval_tasks=40).val_tasks, 40)
    self.assertEqual(Config(dataset='omniglot', split='lake').rotations, False)

  def test_the_run_directory_records_every_value_used_by_section(self):
    run = build_run(Config(algorithm='reptile', hidden=(8,)), data=False)
    workdir = self.create_tempdir().full_path
    rundir.write_config(run.config, workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertEqual(list(saved), ['run', 'episodes', 'algorithm', 'dataset', 'model'])
    self.assertEqual(saved['algorithm'], {'name': 'reptile', 'inner_steps': 5, 'inner_lr': 0.02,
                                          'inner_optimizer': 'sgd'})
    self.assertEqual(saved['model'], {'name': 'mlp', 'hidden': [8]})
    self.assertNotIn('null', json.dumps(saved))
    with open(os.path.join(workdir, 'flags.txt')) as f:
      lines = f.read().splitlines()
    self.assertIn('--inner_steps=5', lines)
    self.assertIn('--hidden=8', lines)
    self.assertFalse([l for l in lines if 'channels' in l or 'batch_norm' in l])
    self.assertEqual(rundir.read_config(workdir), run.config)

  def test_help_shows_only_the_chosen_parts_with_their_defaults(self):
    values = flags.FlagValues()
    cli.define_config_flags(values)
    argv = ['train.py', '--algorithm=protonet', '--dataset=omniglot']
    cli.focus_help(argv, values)
    text = values.module_help('train.py')
    defined = set(re.findall(r'^  --(?:\[no\])?(\w+):', text, re.MULTILINE))
    for absent in ('imaml_lambda', 'msl_steps', 'inner_lr', 'hidden', 'image_channels'):
      self.assertNotIn(absent, defined)
    for present in ('num_steps', 'train_ways', 'split', 'channels', 'rotations', 'algorithm'):
      self.assertIn(present, defined)
    self.assertIn('[default: 60; >= 1]', values['train_ways'].help)
    self.assertIn('--imaml_lambda', values.get_help())  # --helpfull keeps everything


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(*ALGORITHMS)
  def test_a_setting_the_algorithm_does_not_use_is_an_error_naming_the_flag(self, name):
    spec, dataset = ALGORITHMS[name], dataset_for(name)
    for setting in ALGORITHM_SETTINGS:
      make = lambda: Config(algorithm=name, dataset=dataset, **{setting: some_value(setting)})
      if setting in settings.names(spec.settings):
        make().validate()  # accepted
      else:
        with self.assertRaisesRegex(ValueError, rf'^--{setting}=.*--algorithm={name} does '
                                    'not use it'):
          make()

  @parameterized.parameters(
      (dict(inner_optimizer='lbfgs'), "--inner_optimizer='lbfgs': choose one of sgd, momentum, "
       'adam'),
      (dict(algorithm='mamll'), "algorithm='mamll': choose one of maml, fomaml"),
      (dict(dataset='imagenet'), "--dataset='imagenet': choose one of sinusoid, omniglot"),
      (dict(algorithm='protonet'), "--algorithm='protonet': protonet handles classification "
       'tasks; --dataset=sinusoid has regression tasks'),
      (dict(dataset='omniglot', model='mlp'), "--model='mlp': --dataset=omniglot takes conv4, "
       'resnet12'),
      (dict(dataset='omniglot', data_source='hub'), "--data_source='hub': choose one of files"),
      (dict(dataset='omniglot', split='random'), "--split='random': choose one of vinyals"),
      (dict(dataset='omniglot', train_ways=20), '--train_ways=20: only learners whose classes '
       f'come from the support set ({", ".join(n for n, a in ALGORITHMS.items() if a.any_ways)})'
       ' can train'),
      (dict(inner_steps=0), '--inner_steps=0: must be a positive integer'),
      (dict(meta_batch_size=6, task_chunk=4), '--task_chunk=4: --meta_batch_size=6 is not'),
      (dict(eval_inner_steps=(1, -1)), '--eval_inner_steps=1,-1: each value must be >= 0'),
      (dict(batch_norm='support'), "--batch_norm='support': --model=mlp does not use it"),
      (dict(rotations=True), '--rotations=True: --dataset=sinusoid does not use it'),
      (dict(ways=3), '--ways=3: sinusoid regression has no classes'),
      (dict(dataset='folders:/x', data_dir='/y'), '--data_dir=\'/y\': --dataset=folders:/x '
       'names its folder already'),
      (dict(dataset='folders', split_fractions=(0.5, 0.5)), '--split_fractions=0.5,0.5: give '
       'three positive shares'),
      (dict(meta_optimizer='adamm'), "--meta_optimizer='adamm': not an optax optimizer"),
      (dict(inner_rate=0.1), "inner_rate=0.1: no such setting"),
  )
  def test_bad_settings_name_the_flag_and_value(self, changes, message):
    with self.assertRaises(ValueError) as e:
      Config(**changes).validate()
    self.assertTrue(str(e.exception).startswith(message), str(e.exception))

  def test_zero_inner_steps_for_a_model_based_learner(self):
    self.assertEqual(Config(algorithm='predictor', inner_steps=0).validate().inner_steps, 0)

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

  def test_a_flat_config_json_of_metajax_0_2_loads(self):
    # metajax 0.2 stored every setting of every part flat, unset ones as null.
    old = {'algorithm': 'protonet', 'dataset': 'omniglot', 'ways': 5, 'shots': 1, 'query': 5,
           'inner_steps': None, 'inner_lr': None, 'remat': None, 'backprop_steps': None,
           'eval_inner_steps': [0, 1, 10], 'hidden': [40, 40], 'mesh_shape': [],
           'model': None, 'channels': None, 'batch_norm': 'transductive', 'augment': False,
           'split': 'vinyals', 'rotations': None, 'image_size': None, 'meta_batch_size': 1,
           'num_steps': 2000, 'train_ways': 60, 'eval_query': 15}
    config = Config.from_dict(old).validate()
    self.assertEqual((config.algorithm, config.model, config.shots, config.channels,
                      config.rotations, config.eval_inner_steps),
                     ('protonet', 'conv4', 1, 64, True, (0, 1, 10)))
    self.assertIsNone(config.get('inner_lr'))
    maml = Config.from_dict({**old, 'algorithm': 'maml', 'inner_lr': 0.4, 'train_ways': None})
    self.assertEqual((maml.inner_lr, maml.remat, maml.get('cg_steps')), (0.4, False, None))
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


class NewAlgorithmTest(parameterized.TestCase):
  """A new algorithm with two settings needs its own file and its registry entry, nothing else."""

  def test_its_settings_become_flags_help_validation_and_records(self):
    import dataclasses  # pylint: disable=g-import-not-at-top
    from unittest import mock  # pylint: disable=g-import-not-at-top
    from metajax.algorithms.protonet import protonet  # pylint: disable=g-import-not-at-top

    @dataclasses.dataclass(frozen=True)
    class ToySettings(settings.Section):
      toy_temperature: float = settings.setting(2.0, 'softmax temperature', above=0)
      toy_mode: str = settings.setting('a', 'which variant', choices=('a', 'b'))

    spec = registry.AlgorithmSpec(
        name='toy', summary='a toy', settings=ToySettings, tasks=('classification',),
        any_ways=True, build=lambda s, model, loss_fn: protonet(model, loss_fn),
        dataset_defaults={'omniglot': {'toy_temperature': 4.0, 'num_steps': 7}})
    with mock.patch.dict(ALGORITHMS, {'toy': spec}):
      config = Config(algorithm='toy', dataset='omniglot').validate()
      self.assertEqual((config.toy_temperature, config.toy_mode, config.num_steps), (4.0, 'a', 7))
      with self.assertRaisesRegex(ValueError, r"^--toy_mode='c': choose one of a, b"):
        Config(algorithm='toy', dataset='omniglot', toy_mode='c').validate()
      with self.assertRaisesRegex(ValueError, r'^--toy_temperature=1.0: --algorithm=maml does '
                                  'not use it'):
        Config(algorithm='maml', dataset='omniglot', toy_temperature=1.0)
      values = flags.FlagValues()
      cli.define_config_flags(values)
      values(['train.py', '--algorithm=toy', '--dataset=omniglot', '--toy_mode=b'])
      self.assertEqual(cli.config_from_flags(values).toy_mode, 'b')
      cli.focus_help(['train.py', '--algorithm=toy', '--dataset=omniglot'], values)
      self.assertIn('[default: 4.0; > 0]', values['toy_temperature'].help)
      self.assertEqual(config.to_dict()['algorithm'],
                       {'name': 'toy', 'toy_temperature': 4.0, 'toy_mode': 'a'})
