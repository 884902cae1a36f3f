"""experiments/time_to_accuracy.py on a run trained with validation (tiny miniImageNet fixture)."""

import json
import os

from absl.testing import absltest
import pytest

from metajax import loop
from metajax.config import Config
from tests.helpers import make_fixture, script


class TimeToAccuracyTest(absltest.TestCase):

  @pytest.mark.slow
  @pytest.mark.long
  def test_reads_the_validation_curve_and_the_tested_checkpoint(self):
    data_dir = make_fixture(self.create_tempdir().full_path, 'pickle')
    workdir = os.path.join(self.create_tempdir().full_path, 'proto')
    config = Config(dataset='miniimagenet', algorithm='protonet', ways=3, shots=1, query=2,
                    meta_batch_size=2, channels=8, num_steps=20, log_every=5,
                    checkpoint_every=10, eval_every=5, val_tasks=10, eval_tasks=20,
                    data_dir=data_dir)
    loop.train_and_evaluate(config, workdir, show_progress=False)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      val = [r for r in map(json.loads, f) if r['split'] == 'val']
    with open(os.path.join(workdir, 'eval.json')) as f:
      (test,) = json.load(f)
    self.assertEqual([r['step'] for r in val], [5, 10, 15, 20])
    self.assertEqual(sorted(r['time_s'] for r in val), [r['time_s'] for r in val])

    out_dir = self.create_tempdir().full_path
    png = os.path.join(out_dir, 'tta.png')
    best = max(r['accuracy_0_steps'] for r in val)
    first = min(r['time_s'] for r in val if r['accuracy_0_steps'] >= best) / 60
    out = script('time_to_accuracy.py', f'--runs=proto={workdir}', f'--out={png}',
                 f'--targets=3w1s={best}')
    self.assertEqual(out.returncode, 0, out.stderr)
    (row,) = [line for line in out.stdout.splitlines() if line.startswith('proto ')]
    self.assertEqual(row.split()[1:3], ['3w1s', '20'])
    self.assertIn(f'{100 * best:.2f} ', row)
    self.assertIn(f'{100 * test["mean"]:.2f} +- {100 * test["ci95"]:.2f}', row)
    self.assertTrue(row.endswith(f'{first:.1f} min'))
    self.assertGreater(os.path.getsize(png), 10_000)

    size = os.path.getsize(png)
    out = script('time_to_accuracy.py', f'--runs=proto={workdir}', f'--out={png}')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn(f'--out={png}: exists', out.stderr)
    self.assertEqual(os.path.getsize(png), size)
    missing = os.path.join(out_dir, 'nowhere')
    out = script('time_to_accuracy.py', f'--runs=x={missing}', f'--out={out_dir}/b.png')
    self.assertIn(f'--runs=x={missing}: no such directory', out.stderr)
    out = script('time_to_accuracy.py', f'--runs=x={out_dir}', f'--out={out_dir}/b.png')
    self.assertIn(f'--runs=x={out_dir}: {out_dir}: not a run directory', out.stderr)
    self.assertEqual(sorted(os.listdir(out_dir)), ['tta.png'])

    # One label may name a run of each setting (one panel each), not two runs of one.
    out = script('time_to_accuracy.py', f'--runs=proto={workdir},proto={workdir}',
                 f'--out={out_dir}/twice.png')
    self.assertNotEqual(out.returncode, 0)
    self.assertIn(f'--runs=proto={workdir}: proto is already {workdir} for 3w1s', out.stderr)
    two_way = os.path.join(self.create_tempdir().full_path, 'proto2')
    loop.train_and_evaluate(config.replace(ways=2, num_steps=5), two_way, show_progress=False)
    out = script('time_to_accuracy.py', f'--runs=proto={workdir},proto={two_way}',
                 f'--out={out_dir}/both.png')
    self.assertEqual(out.returncode, 0, out.stderr)
    rows = [line.split()[:3] for line in out.stdout.splitlines() if line.startswith('proto ')]
    self.assertEqual(rows, [['proto', '3w1s', '20'], ['proto', '2w1s', '5']])
    self.assertEqual(sorted(os.listdir(out_dir)), ['both.png', 'tta.png'])


if __name__ == '__main__':
  absltest.main()
