"""Stop a run cleanly on Ctrl-C or a scheduler's SIGTERM.

Inside `Graceful`, the first SIGINT or SIGTERM does not raise: it sets a flag
that the training loop reads after each step, so the loop can finish the
step, write a checkpoint and return. A second one raises `KeyboardInterrupt`
at once, for a run that must stop now. On leaving the block the previous
handlers are back.

    with interrupts.Graceful() as stop:
      for step in range(start, num_steps):
        state = train_step(state)
        if stop.requested:
          checkpointer.save(step + 1, state)
          break

Python installs signal handlers only in the main thread; elsewhere `Graceful`
is a no-op (no handler installed, the flag never set), and signals keep their
usual effect.
"""

import os
import signal
import threading
from typing import Sequence


class Graceful:
  """A context manager that turns the first of `signals` into a request to stop.

  Attributes:
    requested: whether one of `signals` arrived while the block was active.
    signal_name: the first one's name ('SIGINT', 'SIGTERM'), or None.
    active: whether handlers were installed (False outside the main thread).

  Args:
    signals: the signals to catch.
    announce: write a line on stderr when the first signal arrives, saying
      that the run will stop after this step and how to stop it at once.
    at_once: the first signal raises `KeyboardInterrupt` (for work that has
      nothing to save, e.g. an evaluation); `requested` says it came from here.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
               announce: bool = True, at_once: bool = False):
    self.signals = tuple(signal.Signals(s) for s in signals)
    self.announce, self.at_once = announce, at_once
    self.requested, self.signal_name, self.active = False, None, False
    self._previous = {}

  def __enter__(self) -> 'Graceful':
    self.requested, self.signal_name, self.active = False, None, False
    if threading.current_thread() is not threading.main_thread():
      return self
    self._previous = {s: signal.getsignal(s) for s in self.signals}
    try:
      for s in self.signals:
        signal.signal(s, self._handle)
    except ValueError:  # not the main interpreter: leave signals alone
      self._restore()
      return self
    self.active = True
    return self

  def __exit__(self, *exc) -> bool:
    if self.active:
      self._restore()
      self.active = False
    return False

  def _restore(self) -> None:
    for s, previous in self._previous.items():
      # None: a handler not installed from Python; the default is the closest.
      signal.signal(s, signal.SIG_DFL if previous is None else previous)
    self._previous = {}

  def _handle(self, signum: int, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested:
      raise KeyboardInterrupt(f'{name} after {self.signal_name}: stopping at once')
    self.requested, self.signal_name = True, name
    if self.at_once:
      raise KeyboardInterrupt(f'{name}: stopping at once')
    if self.announce:
      _write_stderr(f'{name}: stopping after this step and saving a checkpoint '
                    '(send it again to stop at once)\n')


def _write_stderr(text: str) -> None:
  # os.write, not print: a handler may interrupt a print to stderr, and the
  # buffered stream refuses reentrant calls.
  try:
    os.write(2, text.encode())
  except OSError:
    pass

