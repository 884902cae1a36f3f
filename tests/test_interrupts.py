"""interrupts.Graceful: the first SIGINT/SIGTERM sets a flag, the second stops at once."""

import os
import signal
import threading
import time

import pytest

from metajax import interrupts


def _send(signum, stop=None):
  """Sends `signum` to this process and waits for Python to run its handler."""
  os.kill(os.getpid(), signum)
  for _ in range(1000):
    if stop is None or stop.requested:
      return
    time.sleep(0.001)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_the_flag_second_raises_and_handlers_come_back(signum, capfd):
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with pytest.raises(KeyboardInterrupt, match=f'{signum.name} after {signum.name}'):
    with interrupts.Graceful() as stop:
      assert stop.active and not stop.requested
      _send(signum, stop)
      assert stop.requested and stop.signal_name == signum.name
      assert f'{signum.name}: stopping after this step' in capfd.readouterr().err
      _send(signum)
      time.sleep(5)  # interrupted by the handler's KeyboardInterrupt
  assert stop.requested and not stop.active
  assert {s: signal.getsignal(s) for s in before} == before


def test_one_signal_then_a_clean_exit():
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  with interrupts.Graceful(announce=False) as stop:
    _send(signal.SIGTERM, stop)
    assert stop.requested  # one signal: no exception, the block runs to its end
  assert stop.requested and stop.signal_name == 'SIGTERM'
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_previous_handlers_are_restored_even_custom_and_ignored():
  seen = []
  previous_int = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
  previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
  try:
    with interrupts.Graceful(announce=False) as stop:
      _send(signal.SIGINT, stop)
    assert stop.requested and seen == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    _send(signal.SIGINT)
    for _ in range(1000):
      if seen:
        break
      time.sleep(0.001)
    assert seen == [signal.SIGINT]
  finally:
    signal.signal(signal.SIGINT, previous_int)
    signal.signal(signal.SIGTERM, previous_term)


def test_a_no_op_outside_the_main_thread():
  entered, release, result = threading.Event(), threading.Event(), {}
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

  def worker():
    with interrupts.Graceful() as stop:
      entered.set()
      release.wait(10)
    result['stop'] = stop

  thread = threading.Thread(target=worker)
  thread.start()
  try:
    assert entered.wait(10)
    # Nothing installed: a signal now would act as it did before.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
  finally:
    release.set()
    thread.join(10)
  stop = result['stop']
  assert not stop.active and not stop.requested and stop.signal_name is None
