"""learn2learn's MAML (and a PyTorch ProtoNet) in a child process, for benchmark.py.

The configuration mirrors metajax's: the same model (Conv4 with batch norm on
batch statistics, or the sinusoid MLP), the same tasks (the very arrays the
JAX side times), inner SGD steps through `learn2learn.algorithms.MAML`
(second order unless first-order), Adam on the meta-parameters, gradients
divided by the meta-batch, and learn2learn's own training-loop habit (per
task: `clone()`, `adapt()` K times, `backward()` of the query loss). torch
uses as many threads as the machine has cores. learn2learn has no ProtoNet
class (its ProtoNet example is plain PyTorch), so `protonet` is that: the
Conv4 embedding of support and query sets, class means, negative squared
Euclidean distances, cross-entropy, Adam.

learn2learn 0.2.0 does not install from PyPI on Python 3.11 and its top-level
package imports torchvision; see docs/speed.md. This module imports
`learn2learn.algorithms` alone, from the installed package folder.
"""

import importlib.util
import os
import resource
import sys
import time
import types


def check_installed() -> None:
  """Raises ImportError naming the install steps when torch or learn2learn is missing.

  Imports neither (the parent process's memory stays metajax's own).
  """
  for name in ('torch', 'learn2learn'):
    if importlib.util.find_spec(name) is None:
      raise ImportError(
          f'{name} is not installed: --compare=learn2learn needs torch==2.13.0 '
          '(pip install -e ".[bench]") and learn2learn 0.2.0 built from source '
          '(steps in docs/speed.md)')


def import_learn2learn_algorithms():
  """`learn2learn.algorithms` without learn2learn's __init__ (which needs torchvision)."""
  if 'learn2learn.algorithms' in sys.modules:
    return sys.modules['learn2learn.algorithms']
  spec = importlib.util.find_spec('learn2learn')
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
        'learn2learn is not installed: --compare=learn2learn needs torch==2.13.0 '
        '(pip install -e ".[bench]") and learn2learn 0.2.0 built from source '
        '(steps in docs/speed.md)')
  if 'learn2learn' not in sys.modules:
    package = types.ModuleType('learn2learn')
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules['learn2learn'] = package
  import learn2learn.algorithms  # pylint: disable=g-import-not-at-top
  return learn2learn.algorithms


def build_model(config: dict):
  import torch.nn as tnn  # pylint: disable=g-import-not-at-top
  if config['model'] == 'mlp':
    layers, width = [], 1
    for h in config['hidden']:
      layers += [tnn.Linear(width, h), tnn.ReLU()]
      width = h
    return tnn.Sequential(*layers, tnn.Linear(width, 1))
  blocks, cin = [], config['in_channels']
  for _ in range(4):
    blocks += [tnn.Conv2d(cin, config['channels'], 3, padding=1),
               tnn.BatchNorm2d(config['channels'], track_running_stats=False),
               tnn.ReLU(), tnn.MaxPool2d(2)]
    cin = config['channels']
  if config['algorithm'] == 'protonet':  # the embedding alone, as metajax's ProtoNet
    return tnn.Sequential(*blocks, tnn.Flatten())
  side = config['side']
  for _ in range(4):
    side //= 2
  return tnn.Sequential(*blocks, tnn.Flatten(), tnn.Linear(cin * side * side, config['ways']))


def prototype_logits(support, labels, query):
  """Negative squared Euclidean distances to the class means (learn2learn's ProtoNet example)."""
  import torch  # pylint: disable=g-import-not-at-top
  ways = int(labels.max()) + 1
  one_hot = torch.nn.functional.one_hot(labels, ways).to(support.dtype)
  prototypes = one_hot.T @ support / one_hot.sum(0)[:, None]
  return -torch.cdist(query, prototypes).pow(2)


def worker(conn, config: dict, batches: list, threads: int):
  """Serves ('window', steps) -> seconds and ('rss',) -> peak RSS in MB over a pipe."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = build_model(config)
  if config['algorithm'] == 'protonet':
    maml = None
    opt = torch.optim.Adam(model.parameters(), config['meta_lr'])
  else:
    algorithms = import_learn2learn_algorithms()
    maml = algorithms.MAML(model, lr=config['inner_lr'],
                           first_order=config['algorithm'] == 'fomaml')
    opt = torch.optim.Adam(maml.parameters(), config['meta_lr'])
  classify = config['model'] != 'mlp'
  loss_fn = F.cross_entropy if classify else F.mse_loss

  def tensor(x, labels=False):
    t = torch.from_numpy(x)
    if labels:
      return t.long() if classify else t.float()
    return t.permute(0, 3, 1, 2).contiguous() if classify else t.float()

  data = [[(tensor(xs), tensor(ys, True), tensor(xq), tensor(yq, True))
           for xs, ys, xq, yq in zip(*batch)] for batch in batches]

  def meta_step(tasks):
    opt.zero_grad()
    for xs, ys, xq, yq in tasks:
      if maml is None:
        logits = prototype_logits(model(xs), ys, model(xq))
        (F.cross_entropy(logits, yq) / len(tasks)).backward()
        continue
      learner = maml.clone()
      for _ in range(config['inner_steps']):
        learner.adapt(loss_fn(learner(xs), ys))
      (loss_fn(learner(xq), yq) / len(tasks)).backward()
    opt.step()

  meta_step(data[0])  # warm-up
  while True:
    message = conn.recv()
    if message[0] == 'window':
      start = time.perf_counter()
      for i in range(message[1]):
        meta_step(data[i % len(data)])
      conn.send(time.perf_counter() - start)
    elif message[0] == 'rss':
      conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    else:
      conn.close()
      return


class Learn2LearnProcess:
  """The learn2learn side, in a spawned child process so its memory is its own."""

  def __init__(self, config: dict, batches: list, threads: int = 0):
    import multiprocessing  # pylint: disable=g-import-not-at-top
    ctx = multiprocessing.get_context('spawn')
    self.conn, child = ctx.Pipe()
    threads = threads or os.cpu_count()
    self.process = ctx.Process(target=worker, args=(child, config, batches, threads),
                               daemon=True)
    self.process.start()

  def window(self, steps: int) -> float:
    self.conn.send(('window', steps))
    return self.conn.recv()

  def peak_rss_mb(self) -> float:
    self.conn.send(('rss',))
    return self.conn.recv()

  def close(self):
    self.conn.send(('stop',))
    self.process.join(timeout=30)
