"""experiments/l2l_crosscheck.py: metajax and learn2learn from the same weights on the same episodes.

The learn2learn comparison needs torch and learn2learn (the bench extra and the
install steps of docs/speed.md) and the real Omniglot files; skipped without them. In
float64 the two libraries' first meta-steps agree to float64 rounding, which
they could not if the models, the episodes, the inner step or the
meta-optimizer differed. The rechunked yardstick needs neither library.
"""

import importlib.util
import json
import os

from absl.testing import absltest
import pytest

from tests.helpers import script

pytestmark = pytest.mark.omniglot
NO_LEARN2LEARN = any(importlib.util.find_spec(m) is None for m in ('torch', 'learn2learn'))


class CrossCheckTest(absltest.TestCase):

  @pytest.mark.slow
  @pytest.mark.long
  def test_rechunked_yardstick_computes_the_same_steps_in_another_order(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'cc')
    out = script('l2l_crosscheck.py', f'--workdir={workdir}', '--num_steps=3',
                 '--settings=5w1s', '--algorithms=fomaml', '--reference=rechunked',
                 '--burn_in=1', '--block=1', '--float64')
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(workdir, 'crosscheck.json')) as f:
      (result,) = json.load(f)['results'].values()
    self.assertEqual(result['reference'], 'rechunked')
    self.assertLen(result['rechunked']['query_loss'], 3)
    # The same initial weights, episodes and function: equal to float64 rounding.
    self.assertLess(max(result['comparison']['max_relative_difference']), 1e-10)

  @pytest.mark.skipif(NO_LEARN2LEARN, reason='torch and learn2learn are not installed (pip '
                      'install -e ".[bench]" and the learn2learn steps of docs/speed.md)')
  def test_first_steps_agree_in_float64_and_the_results_are_written(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'cc')
    args = [f'--workdir={workdir}', '--num_steps=3', '--settings=5w1s', '--float64',
            '--burn_in=1', '--block=1']
    out = script('l2l_crosscheck.py', *args)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(workdir, 'crosscheck.json')) as f:
      results = json.load(f)['results']
    self.assertEqual(sorted(results), ['fomaml 5w1s', 'maml 5w1s'])
    for r in results.values():
      self.assertLen(r['metajax']['query_loss'], 3)
      # The same function, step by step: float64 rounding (2e-15 measured), not float32's.
      self.assertLess(max(r['comparison']['max_relative_difference']), 1e-11)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'crosscheck.png')))
    again = script('l2l_crosscheck.py', *args)  # never overwrites a result
    self.assertNotEqual(again.returncode, 0)
    self.assertIn('already holds crosscheck.json', again.stderr)


if __name__ == '__main__':
  absltest.main()
