"""Few-shot sinusoid regression, in pure JAX (MAML paper, section 5.1).

A task is y = A sin(x - phase) with A ~ U[0.1, 5.0], phase ~ U[0, pi], and
inputs x ~ U[-5, 5]. Each task has K support and Q query points.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from metajax.types import Array, PRNGKey, Split, Task


@dataclasses.dataclass(frozen=True)
class SinusoidFamily:
  """The distribution over sinusoid tasks; sampling is a pure function of a key."""
  amplitude: tuple[float, float] = (0.1, 5.0)
  phase: tuple[float, float] = (0.0, math.pi)
  x_range: tuple[float, float] = (-5.0, 5.0)

  def sample_functions(self, key: PRNGKey, num_tasks: int) -> tuple[Array, Array]:
    """Amplitudes and phases, each of shape [num_tasks]."""
    k_amp, k_phase = jax.random.split(key)
    amp = jax.random.uniform(k_amp, (num_tasks,), minval=self.amplitude[0],
                             maxval=self.amplitude[1])
    phase = jax.random.uniform(k_phase, (num_tasks,), minval=self.phase[0],
                               maxval=self.phase[1])
    return amp, phase

  @staticmethod
  def evaluate(amp: Array, phase: Array, x: Array) -> Array:
    """The true outputs y = amp * sin(x - phase), broadcast over x's trailing axes."""
    expand = (...,) + (None,) * (x.ndim - amp.ndim)
    return amp[expand] * jnp.sin(x - phase[expand])

  @functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
  def sample(self, key: PRNGKey, num_tasks: int, shots: int,
             query: int) -> Task:
    """A batch of tasks: x and y of shape [num_tasks, shots or query, 1]."""
    k_fn, k_x = jax.random.split(key)
    amp, phase = self.sample_functions(k_fn, num_tasks)
    x = jax.random.uniform(k_x, (num_tasks, shots + query, 1),
                           minval=self.x_range[0], maxval=self.x_range[1])
    y = self.evaluate(amp, phase, x)
    return Task(Split(x[:, :shots], y[:, :shots]),
                Split(x[:, shots:], y[:, shots:]))


def mse(predictions: Array, targets: Array) -> Array:
  """Mean squared error."""
  return jnp.mean(jnp.square(predictions - targets))
