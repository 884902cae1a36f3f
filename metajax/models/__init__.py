"""Flax models. Each has a submodule `head` and methods `embed` and `classify`.

`MODELS` maps each `--model` name to a `ModelSpec`: its settings (declared
once, beside the registry entry) and how they build the module.
"""

import dataclasses
from typing import Callable, Optional

import flax.linen as nn

from metajax import settings as settings_lib
from metajax.models.conv import BatchStatNorm, Conv4
from metajax.models.mlp import MLP
from metajax.models.resnet import ResNet12
from metajax.models.tasknorm import TaskNormI
from metajax.registry import Registry
from metajax.settings import setting

BATCH_NORMS = ('transductive', 'support', 'tasknorm')
_BATCH_NORM_HELP = ('transductive: every batch (support set, query set) is normalised with its '
                    'own statistics, as in the MAML paper | support: a task\'s query inputs are '
                    'normalised with its support set\'s statistics, so no query example sees '
                    'another | tasknorm: TaskNorm-I (Bronskill et al. 2020), the support set\'s '
                    'statistics blended with each example\'s own by a learned weight, leak-free '
                    'as support')


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model: `--model=name`, its settings and `build(settings, outputs) -> module`.

  `one_task_at_a_time_on_cpu`: on a CPU its meta-steps run fastest one task at
  a time in a scan (a vmap of per-task convolutions streams every task's
  activations through memory at once: docs/benchmarks.md).
  """
  name: str
  settings: type
  build: Callable[[settings_lib.Section, int], nn.Module]
  summary: str = ''
  one_task_at_a_time_on_cpu: bool = False


@dataclasses.dataclass(frozen=True)
class MLPSettings(settings_lib.Section):
  hidden: tuple[int, ...] = setting((40, 40), 'hidden widths of the MLP', nonempty=True,
                                    item_minimum=1)


@dataclasses.dataclass(frozen=True)
class Conv4Settings(settings_lib.Section):
  channels: int = setting(64, 'filters per block of Conv4', minimum=1)
  batch_norm: str = setting('transductive', _BATCH_NORM_HELP, choices=BATCH_NORMS)


@dataclasses.dataclass(frozen=True)
class ResNet12Settings(settings_lib.Section):
  batch_norm: str = setting('transductive', _BATCH_NORM_HELP, choices=BATCH_NORMS)


MODELS = Registry('model')
MODELS.register(ModelSpec('mlp', MLPSettings, lambda s, out: MLP(hidden=s.hidden, out=out),
                          'ReLU MLP (the MAML paper\'s sinusoid model)'))
MODELS.register(ModelSpec('conv4', Conv4Settings,
                          lambda s, out: Conv4(out=out, channels=(s.channels,) * 4,
                                               batch_norm=s.batch_norm),
                          'four 3x3 conv blocks with batch norm and 2x2 max-pool',
                          one_task_at_a_time_on_cpu=True))
MODELS.register(ModelSpec('resnet12', ResNet12Settings,
                          lambda s, out: ResNet12(out=out, batch_norm=s.batch_norm),
                          'ResNet-12 (four residual blocks)', one_task_at_a_time_on_cpu=True))


def get(name: str) -> Optional[ModelSpec]:
  return MODELS.lookup(name)


__all__ = ['BatchStatNorm', 'Conv4', 'MLP', 'MODELS', 'ModelSpec', 'ResNet12', 'TaskNormI']
