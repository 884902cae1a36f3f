"""Pre-train, then fine-tune a new head: Baseline and Baseline++.

Training is ordinary supervised learning on all meta-training classes: each
"task" the training loop hands over is one mini-batch of images with their
global class labels (the sources build them for `--algorithm=finetune`), and
the loss is the cross-entropy of a C-way classifier on the backbone's
features. For each test episode the backbone is frozen and a new head, one
column per support class, is fitted on the support features by
`--inner_steps` steps of `--inner_optimizer` at `--inner_lr`:

- Baseline (`--finetune_head=linear`): a linear layer.
- Baseline++ (`--finetune_head=cosine`): cosine similarity to per-class
  weights times a fixed scale, in pre-training and in fine-tuning.

Reference:
  Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification",
  ICLR 2019.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax import inner
from metajax.config import FINETUNE_HEADS
from metajax.learner import MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task

COSINE_SCALE = 10.0


def head_logits(kind: str, head: Params, features: Array) -> Array:
  """[B, C] logits of a linear or cosine head {'kernel': [d, C], 'bias': [C]}."""
  if kind == 'linear':
    return features @ head['kernel'] + head['bias']
  normalise = lambda v, axis: v * jax.lax.rsqrt(jnp.sum(v * v, axis, keepdims=True) + 1e-12)
  return COSINE_SCALE * normalise(features, -1) @ normalise(head['kernel'], 0)


def finetune(model: nn.Module, loss_fn: LossFn, *, num_classes: int, inner_lr: float = 0.01,
             inner_steps: int = 100, inner_optimizer: str = 'adam',
             finetune_head: str = 'linear') -> MetaLearner:
  """Baseline (linear head) or Baseline++ (cosine head).

  Args:
    model: a metajax model; its `embed` is the backbone.
    loss_fn: softmax cross-entropy `(logits, labels) -> scalar`.
    num_classes: classes of the pre-training split (C).
    inner_lr, inner_steps, inner_optimizer: fitting the new head on a test
      episode's support features.
    finetune_head: 'linear' (Baseline) or 'cosine' (Baseline++).

  Returns:
    A `MetaLearner`; theta = {'model': the backbone, 'classifier': the C-way head}.
  """
  if finetune_head not in FINETUNE_HEADS:
    raise ValueError(f'--finetune_head={finetune_head!r}: choose one of '
                     f'{", ".join(FINETUNE_HEADS)}')
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)

  def embed(theta, x):
    return model.apply(theta['model'], x, method='embed')

  def new_head(rng, d, columns, dtype):
    return {'kernel': 0.01 * jax.random.normal(rng, (d, columns), dtype),
            'bias': jnp.zeros(columns, dtype)}

  def init(rng: PRNGKey, example_task: Task) -> Params:
    model_key, head_key = jax.random.split(rng)
    variables = model.init(model_key, example_task.support.x, method='embed')
    features = model.apply(variables, example_task.support.x, method='embed')
    return {'model': variables,
            'classifier': new_head(head_key, features.shape[-1], num_classes, features.dtype)}

  def adapt(theta, support: Split, rng, num_steps=None, return_losses=False):
    """A head fitted on the support features (one column per support example)."""
    steps = inner_steps if num_steps is None else num_steps
    features = jax.lax.stop_gradient(embed(theta, support.x))
    columns = features.shape[0]
    present = jax.nn.one_hot(support.y, columns).sum(0) > 0
    masked = lambda head, f: jnp.where(present, head_logits(finetune_head, head, f), -1e9)
    result = inner.inner_loop(
        lambda head: loss_fn(masked(head, features), support.y),
        new_head(rng, features.shape[-1], columns, features.dtype), optimizer, steps,
        first_order=True)
    adapted = {'head': result.params, 'present': present}
    return (adapted, result.losses) if return_losses else adapted

  def predict(theta, support, query_x, rng, num_steps=None):
    adapted = adapt(theta, support, rng, num_steps)
    logits = head_logits(finetune_head, adapted['head'], embed(theta, query_x))
    return jnp.where(adapted['present'], logits, -1e9)

  def outer_loss(theta, batch: Task, rng):
    """Supervised pre-training loss of one mini-batch (`batch.support`)."""
    del rng
    logits = head_logits(finetune_head, theta['classifier'], embed(theta, batch.support.x))
    loss = loss_fn(logits, batch.support.y)
    return loss, {'query_loss': loss}

  return MetaLearner(name='finetune', init=init, adapt=adapt, predict=predict,
                     outer_loss=outer_loss, any_ways=True)
