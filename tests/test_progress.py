"""Plain progress lines off a terminal, on a fake clock."""

import re
import types

from absl.testing import absltest
import pytest

from metajax import evaluate, progress as progress_lib


@pytest.fixture
def clock(monkeypatch):
  """A fake `time.perf_counter` for metajax.progress; advance it with `clock.now += s`."""
  fake = types.SimpleNamespace(now=1000.0)
  monkeypatch.setattr(progress_lib, 'time',
                      types.SimpleNamespace(perf_counter=lambda: fake.now))
  return fake


def _lines(capsys):
  return capsys.readouterr().err.splitlines()


def test_a_line_at_least_every_30_seconds_with_rate_eta_and_the_loss_of_its_step(
    clock, capsys):
  bar = progress_lib.Progress(10_000, desc='maml on omniglot')
  times = []
  for step in range(1, 201):
    clock.now += 1.0  # one step a second: a tenth would take 1,000 s
    if step % 50 == 0:
      bar.set_postfix(step=step, query_loss=f'{1 / step:.4f}')
    bar.update(1)
    times.append(clock.now)
  bar.close()
  lines = _lines(capsys)
  assert len(lines) == 6  # at 30, 60, ..., 180 s
  assert lines[0] == 'maml on omniglot: 30/10000 steps (0%), 1 step/s, 2.8 h left'
  assert lines[1] == ('maml on omniglot: 60/10000 steps (1%), 1 step/s, 2.8 h left; '
                      'query_loss 0.0200 (step 50)')
  assert lines[-1].endswith('; query_loss 0.0067 (step 150)')
  for line in lines:
    assert re.search(r', [\d.]+ steps?/s, [\d.]+ (s|min|h) left', line), line


def test_tenths_still_make_lines_and_the_rate_counts_from_the_start(clock, capsys):
  bar = progress_lib.Progress(100, initial=20, desc='run', unit='task')
  clock.now += 5.0  # compilation, before the bar: not counted
  bar.start = clock.now
  for _ in range(80):
    clock.now += 0.01
    bar.update(1)
  lines = _lines(capsys)
  assert [line.split(',')[0] for line in lines] == [
      f'run: {n}/100 tasks ({n}%)' for n in range(30, 101, 10)]
  assert lines[-1] == 'run: 100/100 tasks (100%), 100 tasks/s, 0 s left'


def test_set_postfix_without_a_step_keeps_working(clock, capsys):
  bar = progress_lib.Progress(2, desc='d')
  bar.set_postfix(query_loss='0.5000', accuracy='0.9')
  clock.now += 2.0
  bar.update(1)
  assert _lines(capsys) == ['d: 1/2 steps (50%), 0.5 steps/s, 2 s left; '
                            'query_loss 0.5000, accuracy 0.9']


def test_never_one_steps(clock, capsys):
  bar = progress_lib.Progress(1, desc='d')
  clock.now += 1.0
  bar.update(1)
  (line,) = _lines(capsys)
  assert line == 'd: 1/1 step (100%), 1 step/s, 0 s left'
  assert bar.line(clock.now + 1.0).startswith('d: 1/1 step (100%), 0.5 steps/s')
  assert not re.search(r'\b1 steps', line)


def test_disabled_writes_nothing(clock, capsys):
  bar = progress_lib.Progress(10, enabled=False)
  for _ in range(10):
    clock.now += 60.0
    bar.set_postfix(step=1, loss=1)
    bar.update(1)
  bar.close()
  assert capsys.readouterr().err == ''


class ResultLinesTest(absltest.TestCase):

  def test_a_learner_evaluated_without_steps_shows_its_metric_not_zero_steps(self):
    record = lambda steps, mean: {'metric': 'accuracy', 'inner_steps': steps, 'mean': mean,
                                  'ci95': 0.01}
    self.assertEqual(evaluate.format_records('protonet', [record(0, 0.9912)]),
                     'protonet   accuracy: 99.12 +- 1.00 %')
    mse = lambda steps, mean: {'metric': 'mse', 'inner_steps': steps, 'mean': mean, 'ci95': 0.01}
    self.assertEqual(evaluate.format_records('maml', [mse(0, 2.9), mse(1, 0.36), mse(10, 0.1)]),
                     'maml        0 steps: 2.9000 +- 0.0100    1 step:  0.3600 +- 0.0100   '
                     '10 steps: 0.1000 +- 0.0100')
    self.assertEqual(evaluate.format_records('protonet', [{**record(0, 0.7), 'source': 'omniglot'}]),
                     'protonet [omniglot] accuracy: 70.00 +- 1.00 %')
    self.assertEqual(evaluate.format_records('maml', [record(0, 0.2), record(1, 0.98)]),
                     'maml        0 steps: 20.00 +- 1.00 %    1 step:  98.00 +- 1.00 %')
