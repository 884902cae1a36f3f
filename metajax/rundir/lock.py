"""One writer per run directory: `exclusive(workdir)` holds `<workdir>/run.lock`."""

import contextlib
import json
import os
import socket
import time
from typing import Optional

from absl import logging


class RunDirectoryBusyError(RuntimeError):
  """Another live process holds the run directory."""


LOCK = 'run.lock'


def _process_start(pid: int) -> Optional[str]:
  """When process `pid` started (Linux: /proc), to tell it from a later one of the same pid."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict) -> bool:
  if holder.get('host') != socket.gethostname():
    return True  # cannot be checked from here: assume it runs
  try:
    os.kill(int(holder['pid']), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  started = _process_start(int(holder['pid']))
  return started is None or holder.get('started') in (None, started)


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds `<workdir>/run.lock` (pid and host) while the block runs: one writer per run.

  A second process that enters while a live one holds it stops at once with
  `RunDirectoryBusyError` naming the holder. A lock left by a process that no
  longer runs (killed with SIGKILL, say) is stale and is taken over, so a
  killed run resumes. (Two processes that take over one stale lock at the same
  instant can still both enter; launching a killed run twice at once is rare.)
  """
  path = os.path.join(workdir, LOCK)
  mine = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.strftime('%c'),
          'started': _process_start(os.getpid())}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_lock(path)
      if holder is None:
        continue  # released meanwhile
      if holder and _alive(holder):
        raise RunDirectoryBusyError(
            f'workdir={workdir} is in use by process {holder.get("pid")} on '
            f'{holder.get("host")} (since {holder.get("since")}); wait for it to finish or '
            f'stop it (if that process is gone, delete {path})') from None
      logging.warning('%s: taking over the lock of process %s, which no longer runs',
                      workdir, holder.get('pid'))
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(mine, f)
    break
  try:
    yield
  finally:
    if _read_lock(path) == mine:  # release only our own lock
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _read_lock(path: str, patience_s: float = 1.0) -> Optional[dict]:
  """The lock's holder; {} if it stays unreadable; None if there is no lock.

  A lock is created empty and then written, so an unreadable one is read
  again for up to `patience_s` before it counts as stale.
  """
  deadline = time.monotonic() + patience_s
  while True:
    try:
      with open(path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      if time.monotonic() > deadline:
        return {}
      time.sleep(0.05)
