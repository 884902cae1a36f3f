"""The learner contract: the record of pure functions that every algorithm returns.

An algorithm is a factory, e.g. `maml(model, loss_fn, inner_optimizer=optax.sgd(0.4))`,
returning a `MetaLearner`. Everything else (batching over tasks, compiling,
checkpointing, evaluation) is written once in `metajax.step`, `metajax.loop` and
`metajax.evaluate` and works on any learner that keeps this contract
(`tests/test_conformance.py` runs every registered algorithm through it):

- `init(rng, example_task) -> theta`: the meta-parameters, a dict holding the
  model's flax variables under `'model'` plus whatever else is meta-learned
  (Meta-SGD's rates under `'inner_lr'`, a predictor's network under
  `'predictor'`, a pre-training head under `'classifier'`).
- `adapt(theta, support, rng, num_steps=None) -> Adapted(params, support_losses)`:
  `params` (phi) is what `apply` needs to predict for this task (adapted
  flax variables, or a fitted head); `support_losses` has the support loss
  before each inner step, [max(num_steps, 1)]: with no step, the support loss
  of the unadapted learner.
  `num_steps` (static) overrides the training number of inner steps.
- `apply(theta, phi, x, mask=None) -> predictions` for inputs `x` of the task
  that `phi` was adapted to (`mask`: the real rows of a padded `x`, as
  `Split.mask`); `predict(theta, support, query_x, rng, num_steps=None,
  query_mask=None)` is `apply` after `adapt`. Rows are predicted independently
  except for batch statistics over the real rows (transductive batch norm),
  unless the learner is `transductive`: its `apply` fits to the unlabelled
  inputs it predicts (transductive fine-tuning), and its `support_losses` is
  [1], the support loss before that fit.
- exactly one way to train: `outer_loss(theta, task, rng) -> (loss, aux)`,
  whose `jax.grad` is the meta-gradient; or `meta_gradient(theta, task, rng)
  -> (direction, aux)` where the update is not a gradient (Reptile, iMAML);
  or `batch_loss(theta, batch, rng) -> (loss, aux)` on a supervised batch
  `Split(x, y)` (pre-training, Baseline).
- a learner whose loss changes over training (MAML++'s annealed multi-step
  loss and derivative order) sets `takes_step`: its `outer_loss` then takes a
  fourth argument, the meta-steps completed so far (an int32 scalar).
- `aux` always holds exactly `AUX_KEYS`: the query loss after adaptation and
  the support loss before it (for `batch_loss`, both are the batch loss). A
  learner whose `adapt` solves an optimisation problem per task (MetaOptNet's
  QP) also reports `SOLVER_KEYS`: the solver's iterations, its final residual
  and 1 where it stopped at its iteration limit unconverged (0 otherwise); the
  meta-step averages them over tasks and the training loop warns, naming the
  step, when some task's solve did not converge.
"""

from typing import Callable, NamedTuple, Optional

from metajax.types import Array, Metrics, Params, PRNGKey, Split, Task

AUX_KEYS = ('query_loss', 'support_loss_before')
SOLVER_KEYS = ('solver_iterations', 'solver_residual', 'solver_unconverged')


class Adapted(NamedTuple):
  """What `adapt` returns: the task's parameters and its inner-loop support losses."""
  params: Params        # phi, the input of `apply`
  support_losses: Array  # [max(num_steps, 1)] support loss before each inner step


class MetaLearner(NamedTuple):
  """Pure functions that define a meta-learning algorithm (see the module docstring).

  Attributes:
    name: the algorithm's registry name.
    init, adapt, apply: as in the module docstring.
    outer_loss, meta_gradient, batch_loss: exactly one of them is set.
    adapts: whether `num_steps` means anything (an inner loop to step).
    any_ways: whether one learner classifies N-way tasks for any N (its
      classes come from the support set, not from a fixed-size head).
    takes_step: `outer_loss(theta, task, rng, step)` takes the meta-steps
      completed (a schedule over training); otherwise `(theta, task, rng)`.
    transductive: `apply(theta, phi, x)` adapts to the rows of `x` together
      (their labels unseen), so one query input changes another's prediction.
  """
  name: str
  init: Callable[[PRNGKey, Task], Params]
  adapt: Callable[..., Adapted]
  apply: Callable[..., Array]
  outer_loss: Optional[Callable[[Params, Task, PRNGKey], tuple[Array, Metrics]]] = None
  meta_gradient: Optional[Callable[[Params, Task, PRNGKey], tuple[Params, Metrics]]] = None
  batch_loss: Optional[Callable[[Params, Split, PRNGKey], tuple[Array, Metrics]]] = None
  adapts: bool = True
  any_ways: bool = False
  takes_step: bool = False
  transductive: bool = False

  def predict(self, theta: Params, support: Split, query_x: Array, rng: PRNGKey,
              num_steps: Optional[int] = None, query_mask: Optional[Array] = None) -> Array:
    """Predictions for `query_x` (real rows: `query_mask`) after adapting to `support`."""
    return self.apply(theta, self.adapt(theta, support, rng, num_steps).params, query_x,
                      query_mask)
