"""Progress that tells the truth: a tqdm bar on a terminal, plain lines otherwise.

On a terminal, `Progress` is a tqdm bar. When stderr is a file or a pipe (a
batch job, CI), it writes a plain line at each tenth of the work and at
least every `PLAIN_EVERY_S` seconds instead of hundreds of carriage-return
updates, so a log shows within half a minute that a run is alive. Each line
holds the work done, the rate, the time left and the latest postfix values
with the step they belong to:

    maml on omniglot: 400/2400 steps (17%), 3.1 steps/s, 11 min left; query_loss 0.1234 (step 400)

In both, the rate and the time left count only the work done since the bar
started, so a caller starts it after compilation.
"""

import sys
import time
from typing import Iterable, Iterator, Optional

import tqdm

# A plain line at least this often (in seconds), between the tenths.
PLAIN_EVERY_S = 30.0


def say(message: str) -> None:
  """One line of progress on stderr."""
  print(message, file=sys.stderr, flush=True)


def _units(text: str, unit: str) -> str:
  """`text` followed by `unit`, in the plural unless `text` is '1'."""
  return f'{text} {unit}' if text == '1' else f'{text} {unit}s'


class Progress:
  """Counts `total` units from `initial`, shown if `enabled`.

  Args:
    total: units of work in all.
    initial: units already done (a resumed run).
    desc: what is counted, at the start of each line.
    enabled: whether to show anything.
    unit: the unit's name, in the singular ('step', 'task').
  """

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

  def set_postfix(self, step: Optional[int] = None, **values) -> None:
    """Shows `values` (name: value) after the counts, until the next call.

    Args:
      step: the step the values belong to (e.g. the last step of the window a
        loss is averaged over), shown as `(step 400)`; None: not shown.
      **values: what to show, in order.
    """
    text = ', '.join(f'{k} {v}' for k, v in values.items())
    self.postfix = f'{text} (step {step})' if step is not None and text else text
    self.bar.set_postfix_str(self.postfix, refresh=False)

  def update(self, n: int = 1) -> None:
    """Counts `n` more units done; off a terminal, writes a line when one is due."""
    self.done += n
    self.bar.update(n)
    now = time.perf_counter()
    if self.enabled and not self.tty and (
        self.done >= min(self.next_tenth, self.total) or now - self.last_line >= PLAIN_EVERY_S):
      self.next_tenth = self._tenth_after(self.done)
      self.last_line = now
      say(self.line(now))

  def line(self, now: Optional[float] = None) -> str:
    """The plain progress line at time `now` (default: the present)."""
    elapsed = (time.perf_counter() if now is None else now) - self.start
    rate = (self.done - self.initial) / elapsed if elapsed > 0 else float('nan')
    left = (self.total - self.done) / rate if rate > 0 else float('nan')
    speed = f'{rate:.0f}' if rate >= 100 else f'{rate:.3g}'
    text = (f'{self.desc}: {self.done}/{_units(str(self.total), self.unit)} '
            f'({100 * self.done / max(self.total, 1):.0f}%), '
            f'{_units(speed, self.unit)}/s, {_duration(left)} left')
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
