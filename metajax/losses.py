"""Losses and metrics of the two task kinds: `(predictions, targets) -> scalar`."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from metajax.types import Array


def mse(predictions: Array, targets: Array) -> Array:
  """Mean squared error (regression: loss and metric)."""
  return jnp.mean(jnp.square(predictions - targets))


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Mean softmax cross-entropy with integer labels (classification loss)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: Array, labels: Array) -> Array:
  """Fraction of argmax predictions equal to the labels (classification metric)."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def masked_mean(fn: Callable[[Array, Array], Array], predictions: Array, targets: Array,
                mask: Optional[Array] = None) -> Array:
  """`fn(predictions, targets)` over the rows where `mask` is True (None: all rows).

  `fn` is any loss or metric that is a mean over rows (every one above): it is
  applied to each row alone and the results are averaged over the real rows,
  so padding rows, whatever they hold, change neither the value nor its
  gradient.
  """
  if mask is None:
    return fn(predictions, targets)
  per_row = jax.vmap(lambda p, t: fn(p[None], t[None]))(predictions, targets)
  total = jnp.sum(jnp.where(mask, per_row, 0))
  return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)
