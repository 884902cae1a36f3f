"""Small shared fixtures for the tests: tiny sinusoid problems and learners."""

import jax
import jax.numpy as jnp

from metajax import algorithms
from metajax.data.sinusoid import SinusoidFamily, mse
from metajax.models import MLP


def sinusoid_tasks(seed=0, num_tasks=4, shots=5, query=5, dtype=jnp.float32):
  tasks = SinusoidFamily().sample(jax.random.PRNGKey(seed), num_tasks, shots, query)
  return jax.tree.map(lambda v: v.astype(dtype), tasks)


def first(tasks):
  return jax.tree.map(lambda v: v[0], tasks)


def learner(name='maml', hidden=(8, 8), **kwargs):
  return algorithms.make(name, MLP(hidden=hidden), mse, **kwargs)


def init(learner_, tasks, seed=1, dtype=jnp.float32):
  theta = learner_.init(jax.random.PRNGKey(seed), first(tasks))
  return jax.tree.map(lambda v: v.astype(dtype), theta)
