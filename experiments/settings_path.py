r"""How far a run's settings travel through the code, followed from the training entry point.

Runs `experiments/train.py` with the given flags in this process under
`sys.setprofile`, from `metajax.loop.train_and_evaluate` on, and records every
metajax function that receives the run's settings as an argument (a `Config`,
an `EpisodeSpec`, or a settings section: a `metajax.settings.Section`), each
function once, under the nearest such function that called it. Walking that
call tree depth first, a *move* is a step (down to a callee or back up to its
caller) that changes file; a *climb* is a move back up. Prints one JSON object
and the tree.

  python experiments/settings_path.py --flagfile=experiments/configs/omniglot_maml_5w1s_cpu.flags \
      --num_steps=2 --eval_tasks=2 --workdir=/tmp/settings_path

Run it in a checkout of another commit (with that commit's `metajax` on the
path) to compare two versions with the same flags.
"""

import json
import os
import runpy
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'metajax') + os.sep
SETTINGS_TYPES = ('Config', 'EpisodeSpec')


def carries_settings(value) -> bool:
  """A run config, an episode specification or a settings section."""
  for cls in type(value).__mro__:
    if cls.__module__.startswith('metajax') and (
        cls.__name__ in SETTINGS_TYPES or
        (cls.__name__ == 'Section' and cls.__module__ == 'metajax.settings')):
      return True
  return False


class Follower:
  """The call tree of the metajax functions that take the run's settings."""

  def __init__(self, root: str = 'train_and_evaluate'):
    self.root, self.nodes, self.live = root, {}, {}  # code -> node; frame -> node
    self.tree = None

  def __call__(self, frame, event, arg):
    del arg
    if event == 'return':
      self.live.pop(frame, None)
      return
    if event != 'call' or not frame.f_code.co_filename.startswith(PACKAGE):
      return
    code = frame.f_code
    if self.tree is None:
      if code.co_name != self.root:
        return
    else:
      count = code.co_argcount + code.co_kwonlyargcount
      if not any(carries_settings(frame.f_locals.get(name))
                 for name in code.co_varnames[:count]):
        return
    node = self.nodes.get(code)
    if node is None:
      node = self.nodes[code] = {
          'function': code.co_qualname, 'file': os.path.relpath(code.co_filename, REPO),
          'children': []}
      if self.tree is None:
        self.tree = node
      else:
        parent = self._caller(frame)
        if parent is not None:
          parent['children'].append(node)
    self.live[frame] = node

  def _caller(self, frame):
    frame = frame.f_back
    while frame is not None:
      if frame in self.live:
        return self.live[frame]
      frame = frame.f_back
    return None


def walk(tree) -> dict:
  """Functions, files, moves between files and climbs back up, depth first."""
  counts = {'functions': 0, 'files': set(), 'moves': 0, 'climbs': 0}

  def visit(node):
    counts['functions'] += 1
    counts['files'].add(node['file'])
    for child in node['children']:
      if child['file'] != node['file']:
        counts['moves'] += 1
      visit(child)
      if child['file'] != node['file']:
        counts['moves'] += 1
        counts['climbs'] += 1

  visit(tree)
  return {**counts, 'files': len(counts['files'])}


def lines(node, depth=0):
  yield f'{"  " * depth}{node["file"]}: {node["function"]}'
  for child in node['children']:
    yield from lines(child, depth + 1)


def main(argv):
  args = list(argv)
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={tempfile.mkdtemp(prefix="settings_path_")}')
  follower = Follower()
  sys.argv = [os.path.join(REPO, 'experiments', 'train.py')] + args
  sys.setprofile(follower)
  try:
    runpy.run_path(sys.argv[0], run_name='__main__')
  except SystemExit as e:
    if e.code:
      raise
  finally:
    sys.setprofile(None)
  if follower.tree is None:
    raise SystemExit('train_and_evaluate was never called: check the flags')
  print('\n'.join(lines(follower.tree)))
  print(json.dumps(walk(follower.tree)))


if __name__ == '__main__':
  main(sys.argv[1:])
