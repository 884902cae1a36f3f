"""The registry of algorithms: each algorithm module registers one `AlgorithmSpec`.

A spec says what the experiment layer needs to know about an algorithm, so
that nothing else lists algorithm names or capabilities: the settings (config
fields) it reads, its own defaults for them (its paper's), which task kinds it
handles, whether one learner classifies any number of ways, and how it is
built from resolved settings. Flag choices, help and validation read it.
"""

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import optax

from metajax.learner import MetaLearner
from metajax.registry import Registry
from metajax.types import LossFn

# (settings, model, loss_fn, inner_optimizer) -> learner. `settings` maps each
# name in `AlgorithmSpec.settings` to its resolved value; `inner_optimizer(lr)`
# is the optax transformation the user chose, at learning rate `lr`.
Build = Callable[[Mapping[str, Any], nn.Module, LossFn,
                  Callable[[float], optax.GradientTransformation]], MetaLearner]


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """One algorithm, as the experiment layer sees it.

  Attributes:
    name: the registry name (`--algorithm`).
    summary: one line for `--help`.
    build: how resolved settings become a learner (see `Build`).
    settings: the config settings it reads; giving it any other algorithm
      setting is an error.
    defaults: its values for those settings when the user gives none.
    dataset_defaults: per dataset, values that replace `defaults` there.
    choices: the allowed values of string settings.
    from_data: settings filled from the data source when unset
      (setting -> attribute of the source).
    tasks: the task kinds it handles ('regression', 'classification').
    any_ways: one learner classifies N-way tasks for any N.
  """
  name: str
  summary: str
  build: Build
  settings: tuple[str, ...] = ()
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dataset_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  choices: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  from_data: Mapping[str, str] = dataclasses.field(default_factory=dict)
  tasks: tuple[str, ...] = ('regression', 'classification')
  any_ways: bool = False

  @property
  def adapts(self) -> bool:
    """Whether it has an inner loop (its learners take `num_steps`)."""
    return 'inner_steps' in self.settings

  @property
  def truncatable(self) -> bool:
    """Whether it backpropagates through only the last k inner steps on request."""
    return 'backprop_steps' in self.settings

  def default(self, setting: str, dataset: str) -> Any:
    """Its default for `setting` on `dataset` (None: none)."""
    return self.dataset_defaults.get(dataset, {}).get(setting, self.defaults.get(setting))


INNER_SETTINGS = ('inner_lr', 'inner_steps', 'inner_optimizer')


def build_inner(factory: Callable[..., MetaLearner]) -> Build:
  """The `build` of a factory whose only settings are `INNER_SETTINGS`."""

  def build(s, model, loss_fn, inner_optimizer):
    return factory(model, loss_fn, inner_optimizer=inner_optimizer(s['inner_lr']),
                   inner_steps=s['inner_steps'])

  return build


ALGORITHMS = Registry('algorithm')
register = ALGORITHMS.register
get = ALGORITHMS.lookup
