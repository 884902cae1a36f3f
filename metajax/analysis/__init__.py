"""Tools to study meta-gradients and inner-loss curvature.

- `meta_gradients`: exact (second-order), first-order, Hessian-term and
  implicit meta-gradients per task; cosines, norm ratios, signal-to-noise.
- `hessian`: Hessian-vector products (forward-over-reverse), top eigenvalues
  by Lanczos, Hutchinson trace estimates, eigenvalues along the inner
  trajectory.
"""

from metajax.analysis.hessian import (LanczosResult, dense_hessian, flat_hvp, hutchinson_trace,
                                      hvp, lanczos, top_eigenvalues,
                                      trajectory_top_eigenvalues)
from metajax.analysis.meta_gradients import (compare_meta_gradients, cosine, inner_trajectory,
                                             signal_to_noise, task_meta_gradients)

__all__ = ['LanczosResult', 'dense_hessian', 'flat_hvp', 'hutchinson_trace', 'hvp', 'lanczos',
           'top_eigenvalues', 'trajectory_top_eigenvalues', 'compare_meta_gradients', 'cosine',
           'inner_trajectory', 'signal_to_noise', 'task_meta_gradients']
