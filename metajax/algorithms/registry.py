"""The registry of algorithms: each algorithm module registers one `AlgorithmSpec`.

A spec says what the run layer needs to know about an algorithm, so that
nothing else lists algorithm names or capabilities: its settings section
(declared once, beside its code), its defaults for other sections (its
paper's protocol, per dataset where the paper differs by dataset), which task
kinds it handles, whether one learner classifies any number of ways, and how
its settings build it.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import optax

from metajax import settings as settings_lib
from metajax.learner import MetaLearner
from metajax.registry import Registry
from metajax.settings import setting
from metajax.types import LossFn

# (settings, model, loss_fn) -> learner; `settings` is the algorithm's section.
Build = Callable[[Any, nn.Module, LossFn], MetaLearner]

# Adam gets eps_root > 0 so that it can be differentiated through (see metajax.inner).
INNER_OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    'sgd': optax.sgd,
    'momentum': lambda lr: optax.sgd(lr, momentum=0.9),
    'adam': lambda lr: optax.adam(lr, eps_root=1e-12),
}


@dataclasses.dataclass(frozen=True)
class NoSettings(settings_lib.Section):
  """An algorithm with no settings of its own."""


@dataclasses.dataclass(frozen=True)
class InnerLoop(settings_lib.Section):
  """The settings of an inner loop of gradient steps."""
  inner_steps: int = setting(1, 'inner-loop steps during meta-training', minimum=1)
  inner_lr: float = setting(0.01, 'inner-loop learning rate', above=0)
  inner_optimizer: str = setting('sgd', 'inner-loop optimizer, differentiated through',
                                 choices=tuple(INNER_OPTIMIZERS))

  def inner_optimizer_at(self, lr: Optional[float] = None) -> optax.GradientTransformation:
    """`inner_optimizer` as an optax transformation at rate `lr` (default: `inner_lr`)."""
    return INNER_OPTIMIZERS[self.inner_optimizer](self.inner_lr if lr is None else lr)


def remat_setting():
  return setting(False, 'rematerialise inner steps in the backward pass (less memory)')


def backprop_steps_setting():
  return setting(None, 'backpropagate through only the last k inner steps, the earlier ones '
                 'first order (default: all)', minimum=0)


def zero_head_setting():
  return setting(False, 'every inner loop starts from a zero linear head, the "zeroing trick" '
                 'of Kao et al. (ICLR 2022); the head is then not meta-learned')


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """One algorithm, as the run layer sees it.

  Attributes:
    name: the registry name (`--algorithm`).
    summary: one line for `--help`.
    build: how its settings become a learner (see `Build`).
    settings: its settings section (a `metajax.settings.Section` class).
    defaults: its defaults for settings of other sections (e.g. evaluation
      after its own number of inner steps).
    dataset_defaults: per dataset, defaults of any section that replace the
      others there (the paper's protocol on that dataset).
    from_data: its settings filled from the data source when unset
      (setting -> attribute of the source).
    tasks: the task kinds it handles ('regression', 'classification').
    any_ways: one learner classifies N-way tasks for any N.
    check: `(settings) -> None`, raising ValueError for settings that do not
      go together.
    solver_settings: the settings that limit a per-task solver (named by the
      training loop's warning when a solve stops unconverged).
  """
  name: str
  summary: str
  build: Build
  settings: type = NoSettings
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dataset_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  from_data: Mapping[str, str] = dataclasses.field(default_factory=dict)
  tasks: tuple[str, ...] = ('regression', 'classification')
  any_ways: bool = False
  check: Optional[Callable[[Any], None]] = None
  solver_settings: tuple[str, ...] = ()

  def section(self, dataset: Optional[str] = None, **values):
    """Its settings section, validated: its defaults (on `dataset` where they differ), then `values`.

    Raises:
      ValueError: naming the setting, for one it does not declare or a value out of limits.
    """
    own = settings_lib.names(self.settings)
    for name, value in values.items():
      if name not in own:
        settings_lib.fail(name, value, f'--algorithm={self.name} does not use it (its settings: '
                          f'{", ".join("--" + n for n in own) or "none"})')
    layers = (self.defaults, self.dataset_defaults.get(dataset, {}) if dataset else {}, values)
    merged = {k: v for layer in layers for k, v in layer.items() if k in own}
    section = settings_lib.build(self.settings, merged).validate()
    if self.check is not None:
      self.check(section)
    return section

  def learner(self, model: nn.Module, loss_fn: LossFn, dataset: Optional[str] = None,
              **values) -> MetaLearner:
    """Its learner of `model` and `loss_fn`, from its settings (`section(dataset, **values)`).

        learner = ALGORITHMS['maml'].learner(MLP(hidden=(40, 40)), losses.mse, inner_steps=5)
    """
    return self.build(self.section(dataset, **values), model, loss_fn)

  @property
  def adapts(self) -> bool:
    """Whether it has an inner loop (its learners take `num_steps`)."""
    return 'inner_steps' in settings_lib.names(self.settings)

  @property
  def truncatable(self) -> bool:
    """Whether it backpropagates through only the last k inner steps on request."""
    return 'backprop_steps' in settings_lib.names(self.settings)


ALGORITHMS = Registry('algorithm')
register = ALGORITHMS.register
get = ALGORITHMS.lookup
