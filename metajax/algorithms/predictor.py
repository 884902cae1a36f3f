"""Model-based meta-learning: a network predicts each task's head from its support set.

theta_tau = g(theta, tau): a feature extractor f and a parameter-prediction
network g map the support set of a task to the parameters of its head, with
no gradient steps (optionally refined by a few differentiable inner steps, the
hybrid between model-based and optimisation-based meta-learning). Trained
episodically end to end: the meta-gradient flows through g and f.

Classification (Qiao et al. 2018; Gidaris & Komodakis 2018): the weight of
class c is a learned linear map of the class's mean support embedding,
w_c = A m_c + a (A initialised to the identity), and the head scores a query
by `--predictor_head`: cosine similarity times a learned scale (default, as in
Gidaris & Komodakis), dot product, or negative squared Euclidean distance
(with A = I, a = 0 that is exactly a Prototypical Network).

Regression (sinusoid): the head (w, b) of the last layer is a learned linear
map of the support statistics mean_i [f(x_i) y_i, f(x_i), y_i].

References:
  Qiao, Liu, Shen & Yuille, "Few-Shot Image Recognition by Predicting
  Parameters from Activations", CVPR 2018.
  Gidaris & Komodakis, "Dynamic Few-Shot Visual Learning without
  Forgetting", CVPR 2018.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax import inner
from metajax.config import PREDICTOR_HEADS as HEADS
from metajax.algorithms.protonet import class_means
from metajax.learner import MetaLearner
from metajax.types import Array, LossFn, Params, PRNGKey, Split, Task



def head_logits(kind: str, weights: Array, scale: Array, features: Array) -> Array:
  """[Q, S] scores of `features` [Q, d] against class weights [S, d]."""
  if kind == 'cosine':
    normalise = lambda v: v * jax.lax.rsqrt(jnp.sum(v * v, -1, keepdims=True) + 1e-12)
    return scale * normalise(features) @ normalise(weights).T
  if kind == 'dot':
    return features @ weights.T
  if kind == 'euclidean':
    return -(jnp.sum(features ** 2, -1, keepdims=True) - 2 * features @ weights.T
             + jnp.sum(weights ** 2, -1))
  raise ValueError(f'--predictor_head={kind!r}: choose one of {", ".join(HEADS)}')


def predictor(model: nn.Module, loss_fn: LossFn, *, inner_lr: float = 0.01,
              inner_steps: int = 0, inner_optimizer: str = 'sgd', remat: bool = False,
              predictor_head: str = 'cosine') -> MetaLearner:
  """A learner that predicts the task's head from the support set.

  Args:
    model: a metajax model with `embed` (the feature extractor f).
    loss_fn: the task loss; integer labels make a classification task
      (N-way heads predicted per class), float targets a regression task.
    inner_lr, inner_steps, inner_optimizer, remat: the optional refinement of
      the predicted head by differentiable inner steps on the support loss
      (`inner_steps=0`: none, purely model-based).
    predictor_head: 'cosine', 'dot' or 'euclidean' (classification).

  Returns:
    A `MetaLearner`; theta = {'model': f's variables, 'predictor': g's}.
  """
  if predictor_head not in HEADS:
    raise ValueError(f'--predictor_head={predictor_head!r}: choose one of {", ".join(HEADS)}')
  optimizer = inner.inner_optimizer(inner_optimizer, inner_lr)

  def embed(theta, x):
    return model.apply(theta['model'], x, method='embed')

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
      means, counts = class_means(features, support.y)
      return {'w': means @ g['kernel'] + g['bias']}, counts
    y = support.y.reshape(features.shape[0], -1)[:, :1]
    stats = jnp.mean(jnp.concatenate([features * y, features, y], -1), 0)
    head = stats @ g['kernel'] + g['bias']
    return {'w': head[:-1], 'b': head[-1]}, None

  def outputs(theta, head, counts, features):
    if counts is None:  # regression
      return (features @ head['w'] + head['b'])[:, None]
    logits = head_logits(predictor_head, head['w'], theta['predictor'].get('scale'),
                         features)
    return jnp.where(counts > 0, logits, -1e9)

  def adapt(theta, support: Split, rng, num_steps=None, return_losses=False):
    """The task's head: predicted, then refined by the inner steps."""
    del rng
    steps = inner_steps if num_steps is None else num_steps
    features = embed(theta, support.x)
    head, counts = predicted_head(theta, support, features)
    result = inner.inner_loop(
        lambda h: loss_fn(outputs(theta, h, counts, features), support.y), head,
        optimizer, steps, remat=remat)
    adapted = {'head': result.params, 'counts': counts}
    return (adapted, result.losses) if return_losses else adapted

  def predict(theta, support, query_x, rng, num_steps=None):
    adapted = adapt(theta, support, rng, num_steps)
    return outputs(theta, adapted['head'], adapted['counts'], embed(theta, query_x))

  def outer_loss(theta, task: Task, rng):
    adapted, _ = adapt(theta, task.support, rng, return_losses=True)
    predictions = outputs(theta, adapted['head'], adapted['counts'],
                          embed(theta, task.query.x))
    loss = loss_fn(predictions, task.query.y)
    return loss, {'query_loss': loss}

  return MetaLearner(name='predictor', init=init, adapt=adapt, predict=predict,
                     outer_loss=outer_loss, any_ways=True)
