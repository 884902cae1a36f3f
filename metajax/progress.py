"""Progress that tells the truth: a tqdm bar on a terminal, plain lines otherwise.

On a terminal, `Progress` is a tqdm bar. When stderr is a file or a pipe (a
batch job, CI), it writes a plain line at each tenth of the work and at
least every five minutes instead of hundreds of carriage-return updates. In
both, the rate and the time left count only the work done since the bar
started, so a caller starts it after compilation.
"""

import sys
import time
from typing import Iterable, Iterator, Optional

import tqdm

PLAIN_EVERY_S = 300.0


def say(message: str) -> None:
  """One line of progress on stderr."""
  print(message, file=sys.stderr, flush=True)


class Progress:
  """Counts `total` units from `initial`, shown if `enabled`."""

  def __init__(self, total: int, initial: int = 0, desc: str = '', enabled: bool = True,
               unit: str = 'step'):
    self.total, self.done, self.desc, self.unit = total, initial, desc, unit
    self.enabled, self.tty = enabled, sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=2.0,
                         disable=not (enabled and self.tty))
    self.start, self.initial, self.postfix = time.perf_counter(), initial, ''
    self.last_line, self.next_tenth = self.start, self._tenth_after(initial)

  def _tenth_after(self, done: int) -> int:
    tenth = max(1, self.total // 10)
    return (done // tenth + 1) * tenth

  def set_postfix(self, **values) -> None:
    self.postfix = ', '.join(f'{k} {v}' for k, v in values.items())
    self.bar.set_postfix(values, refresh=False)

  def update(self, n: int = 1) -> None:
    self.done += n
    self.bar.update(n)
    now = time.perf_counter()
    if self.enabled and not self.tty and (
        self.done >= min(self.next_tenth, self.total) or now - self.last_line >= PLAIN_EVERY_S):
      self.next_tenth = self._tenth_after(self.done)
      self.last_line = now
      say(self.line(now))

  def line(self, now: Optional[float] = None) -> str:
    elapsed = (now or time.perf_counter()) - self.start
    rate = (self.done - self.initial) / elapsed if elapsed > 0 else float('nan')
    left = (self.total - self.done) / rate if rate > 0 else float('nan')
    speed = f'{rate:.0f}' if rate >= 100 else f'{rate:.3g}'
    text = (f'{self.desc}: {self.done}/{self.total} {self.unit}s '
            f'({100 * self.done / max(self.total, 1):.0f}%), {speed} {self.unit}s/s, '
            f'{_duration(left)} left')
    return f'{text}; {self.postfix}' if self.postfix else text

  def close(self) -> None:
    self.bar.close()


def _duration(seconds: float) -> str:
  if seconds != seconds:  # nan
    return '?'
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 7200:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def counted(items: Iterable, progress: Progress, size=lambda item: 1,
            close: bool = True) -> Iterator:
  """Yields `items`, counting `size(item)` units of each on `progress` (then closes it)."""
  try:
    for item in items:
      yield item
      progress.update(size(item))
  finally:
    if close:
      progress.close()
