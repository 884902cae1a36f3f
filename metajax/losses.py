"""Losses and metrics of the two task kinds: `(predictions, targets) -> scalar`."""

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
