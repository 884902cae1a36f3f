"""Pre-train, then fine-tune a new head: Baseline and Baseline++.

Training is ordinary supervised learning on all meta-training classes: the
training loop hands over supervised batches `Split(images, class indices)`
and `batch_loss` is the cross-entropy of a C-way classifier on the backbone's
features. For each test episode the backbone is frozen and a new head, one
column per support class, is fitted on the support features by
`inner_steps` steps of `inner_optimizer`:

- Baseline (`finetune_head='linear'`): a linear layer.
- Baseline++ (`finetune_head='cosine'`): cosine similarity to per-class weights times
  a fixed scale, in pre-training and in fine-tuning.

Reference:
  Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification",
  ICLR 2019.
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import inner, losses
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register
from metajax.settings import setting
from metajax.learner import Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task

COSINE_SCALE = 10.0
HEADS = ('linear', 'cosine')


def _classify(kind: str, head: Params, features: Array) -> Array:
  """[B, C] logits of a linear or cosine head {'kernel': [d, C], 'bias': [C]}."""
  return common.head_logits(kind, features, head['kernel'], head.get('bias'), COSINE_SCALE)


def finetune(model: nn.Module, loss_fn: LossFn, *, pretrain_classes: int,
             inner_optimizer: optax.GradientTransformation = optax.adam(0.01),
             inner_steps: int = 100, finetune_head: str = 'linear') -> MetaLearner:
  """Baseline (linear head) or Baseline++ (cosine head).

  Args:
    model: a metajax model; its `embed` is the backbone.
    loss_fn: softmax cross-entropy `(logits, labels) -> scalar`.
    pretrain_classes: classes of the pre-training split (C).
    inner_optimizer, inner_steps: fitting the new head on a test episode's
      support features.
    finetune_head: 'linear' (Baseline) or 'cosine' (Baseline++).

  Returns:
    A `MetaLearner` with a `batch_loss`; theta = {'model': the backbone,
    'classifier': the C-way head}; phi = {'head', 'present'}.
  """
  if finetune_head not in HEADS:
    raise ValueError(f'finetune_head={finetune_head!r}: choose one of {", ".join(HEADS)}')

  def embed(theta, x, mask=None):
    return common.run_model(model, theta['model'], x, mask, 'embed')

  def new_head(rng, d, columns, dtype):
    return {'kernel': 0.01 * jax.random.normal(rng, (d, columns), dtype),
            'bias': jnp.zeros(columns, dtype)}

  def init(rng: PRNGKey, example_task: Task) -> Params:
    model_key, head_key = jax.random.split(rng)
    variables = model.init(model_key, example_task.support.x, method='embed')
    features = model.apply(variables, example_task.support.x, method='embed')
    return {'model': variables,
            'classifier': new_head(head_key, features.shape[-1], pretrain_classes, features.dtype)}

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    """A head fitted on the support features (one column per support example)."""
    steps = inner_steps if num_steps is None else num_steps
    features = jax.lax.stop_gradient(embed(theta, support.x, support.mask))
    columns = features.shape[0]
    _, counts = common.class_means(features, support.y, support.mask)
    present = counts > 0
    masked = lambda fitted, f: jnp.where(present, _classify(finetune_head, fitted, f), -1e9)
    result = inner.inner_loop(
        lambda fitted: losses.masked_mean(loss_fn, masked(fitted, features), support.y,
                                          support.mask),
        new_head(rng, features.shape[-1], columns, features.dtype), inner_optimizer, steps,
        first_order=True)
    return Adapted({'head': result.params, 'present': present}, result.losses)

  def apply(theta, phi, x, mask=None):
    return jnp.where(phi['present'], _classify(finetune_head, phi['head'], embed(theta, x, mask)), -1e9)

  adapt, apply = common.support_statistics(model, adapt, apply)

  def batch_loss(theta, batch: Split, rng):
    """Supervised pre-training loss of one mini-batch."""
    del rng
    loss = loss_fn(_classify(finetune_head, theta['classifier'], embed(theta, batch.x)), batch.y)
    return loss, {'query_loss': loss, 'support_loss_before': loss}

  return MetaLearner(name='finetune', init=init, adapt=adapt, apply=apply,
                     batch_loss=batch_loss, any_ways=True)


# Supervised pre-training on every class of the Vinyals training split:
# mini-batches of 128 shifted images, AdamW with warm-up and cosine decay
# (also transductive fine-tuning's).
OMNIGLOT_PRETRAINING = {'meta_batch_size': 128, 'augment': True, 'meta_optimizer': 'adamw',
                        'meta_lr': 0.002, 'lr_schedule': 'warmup_cosine', 'warmup_steps': 200,
                        'num_steps': 3000, 'checkpoint_every': 250, 'log_every': 50}


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(InnerLoop):
  """Each test head is fitted by 100 steps of Adam at 0.01 (Chen et al. 2019)."""
  inner_steps: int = setting(100, 'steps fitting the new head on each test episode', minimum=1)
  inner_optimizer: str = setting('adam', 'optimizer fitting the new head',
                                 choices=InnerLoop.__dataclass_fields__['inner_optimizer']
                                 .metadata['choices'])
  finetune_head: str = setting('linear', 'the head fitted on each test episode: linear '
                               '(Baseline) | cosine (Baseline++, also in pre-training)',
                               choices=HEADS)
  pretrain_classes: Optional[int] = setting(None, 'classes of the pre-training head (default: '
                                            'every class of the training split, from the data)',
                                            minimum=2)


register(AlgorithmSpec(
    name='finetune', summary='pre-train, fine-tune a new head: Baseline / Baseline++ (Chen et al. 2019)',
    settings=FinetuneSettings, defaults={'eval_inner_steps': (100,)},
    from_data={'pretrain_classes': 'num_train_classes'},
    tasks=('classification',), any_ways=True,
    build=lambda s, model, loss_fn: finetune(
        model, loss_fn, pretrain_classes=s.pretrain_classes, inner_optimizer=s.inner_optimizer_at(),
        inner_steps=s.inner_steps, finetune_head=s.finetune_head),
    dataset_defaults={'omniglot': OMNIGLOT_PRETRAINING}))
