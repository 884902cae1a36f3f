"""Model-based meta-learning: a network predicts each task's head from its support set.

theta_tau = g(theta, tau): a feature extractor f and a parameter-prediction
network g map the support set of a task to the parameters of its head, with
no gradient steps (optionally refined by a few differentiable inner steps, the
hybrid between model-based and optimisation-based meta-learning). Trained
episodically end to end: the meta-gradient flows through g and f.

Classification (Qiao et al. 2018; Gidaris & Komodakis 2018): the weight of
class c is a learned linear map of the class's mean support embedding,
w_c = A m_c + a (A initialised to the identity), and the head scores a query
by `predictor_head`: cosine similarity times a learned scale (default, as in Gidaris &
Komodakis), dot product, or negative squared Euclidean distance (with A = I,
a = 0 that is exactly a Prototypical Network).

Regression (sinusoid): the head (w, b) of the last layer is a learned linear
map of the support statistics mean_i [f(x_i) y_i, f(x_i), y_i].

References:
  Qiao, Liu, Shen & Yuille, "Few-Shot Image Recognition by Predicting
  Parameters from Activations", CVPR 2018.
  Gidaris & Komodakis, "Dynamic Few-Shot Visual Learning without
  Forgetting", CVPR 2018.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax import inner, losses
from metajax.algorithms import common
from metajax.algorithms.registry import AlgorithmSpec, InnerLoop, register, remat_setting
from metajax.settings import setting
from metajax.learner import Adapted, MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task

HEADS = ('cosine', 'dot', 'euclidean')


def predictor(model: nn.Module, loss_fn: LossFn, *,
              inner_optimizer: optax.GradientTransformation = optax.sgd(0.01),
              inner_steps: int = 0, remat: bool = False, predictor_head: str = 'cosine') -> MetaLearner:
  """A learner that predicts the task's head from the support set.

  Args:
    model: a metajax model with `embed` (the feature extractor f).
    loss_fn: the task loss; integer labels make a classification task
      (N-way heads predicted per class), float targets a regression task.
    inner_optimizer, inner_steps, remat: the optional refinement of the
      predicted head by differentiable inner steps on the support loss
      (`inner_steps=0`: none, purely model-based).
    predictor_head: 'cosine', 'dot' or 'euclidean' (classification).

  Returns:
    A `MetaLearner`; theta = {'model': f's variables, 'predictor': g's};
    phi = {'head': the task's head, 'counts': support examples per class}.
  """
  if predictor_head not in HEADS:
    raise ValueError(f'predictor_head={predictor_head!r}: choose one of {", ".join(HEADS)}')

  def embed(theta, x, mask=None):
    return common.run_model(model, theta['model'], x, mask, 'embed')

  def init(rng: PRNGKey, example_task: Task) -> Params:
    model_key, g_key = jax.random.split(rng)
    variables = model.init(model_key, example_task.support.x, method='embed')
    d = model.apply(variables, example_task.support.x, method='embed').shape[-1]
    if jnp.issubdtype(example_task.support.y.dtype, jnp.integer):
      g = {'kernel': jnp.eye(d), 'bias': jnp.zeros(d), 'scale': jnp.asarray(10.0)}
    else:
      g = {'kernel': jax.random.normal(g_key, (2 * d + 1, d + 1)) / jnp.sqrt(2 * d + 1),
           'bias': jnp.zeros(d + 1)}
    return {'model': variables, 'predictor': g}

  def predicted_head(theta, support: Split, features: Array):
    g = theta['predictor']
    if jnp.issubdtype(support.y.dtype, jnp.integer):
      means, counts = common.class_means(features, support.y, support.mask)
      return {'w': means @ g['kernel'] + g['bias']}, counts
    y = support.y.reshape(features.shape[0], -1)[:, :1]
    stats = jnp.mean(jnp.concatenate([features * y, features, y], -1), 0)
    weights = stats @ g['kernel'] + g['bias']
    return {'w': weights[:-1], 'b': weights[-1]}, None

  def outputs(theta, task_head, counts, features):
    if counts is None:  # regression
      return (features @ task_head['w'] + task_head['b'])[:, None]
    logits = common.head_logits(predictor_head, features, task_head['w'].T,
                                  scale=theta['predictor'].get('scale'))
    return common.mask_absent(logits, counts)

  def adapt(theta, support: Split, rng, num_steps=None) -> Adapted:
    """The task's head: predicted, then refined by the inner steps."""
    del rng
    steps = inner_steps if num_steps is None else num_steps
    features = embed(theta, support.x, support.mask)
    task_head, counts = predicted_head(theta, support, features)
    result = inner.inner_loop(
        lambda h: losses.masked_mean(loss_fn, outputs(theta, h, counts, features), support.y,
                                     support.mask), task_head, inner_optimizer, steps, remat=remat)
    return Adapted({'head': result.params, 'counts': counts}, result.losses)

  def apply(theta, phi, x, mask=None):
    return outputs(theta, phi['head'], phi['counts'], embed(theta, x, mask))

  return common.query_loss_learner('predictor', model, loss_fn, adapt, init=init,
                                   apply=apply)._replace(any_ways=True)


@dataclasses.dataclass(frozen=True)
class PredictorSettings(InnerLoop):
  inner_steps: int = setting(0, 'inner-loop steps on the predicted head (0: none)', minimum=0)
  remat: bool = remat_setting()
  predictor_head: str = setting('cosine', 'how a query is scored against the predicted class '
                                'weights: cosine (times a learned scale) | dot | euclidean',
                                choices=HEADS)


register(AlgorithmSpec(
    name='predictor', summary='a network predicts the head from the support set (Qiao et al. 2018)',
    settings=PredictorSettings, any_ways=True,
    build=lambda s, model, loss_fn: predictor(
        model, loss_fn, inner_optimizer=s.inner_optimizer_at(), inner_steps=s.inner_steps,
        remat=s.remat, predictor_head=s.predictor_head),
    # Qiao et al. train on more ways than they test: 30-way episodes of 1 shot,
    # 5 queries per class, one episode a step, 1,500 steps on a 2-core CPU.
    dataset_defaults={'omniglot': {'train_ways': 30, 'query': 5, 'eval_query': 15,
                                   'meta_batch_size': 1, 'num_steps': 1500,
                                   'checkpoint_every': 100, 'log_every': 50,
                                   'eval_inner_steps': (0,)}}))
