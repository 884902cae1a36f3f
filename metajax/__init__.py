"""metajax: meta-learning and few-shot learning in JAX.

The library core (types, inner, learner, models, algorithms, data, step)
takes Python objects (optax transformations, flax modules); the run layer
(config, run, loop, rundir) builds and runs experiments from settings.
"""

from metajax import algorithms
from metajax.config import Config
from metajax.learner import Adapted, MetaLearner
from metajax.loop import train_and_evaluate
from metajax.rundir import load_learner, load_run
from metajax.run import Run, build_run, episode_sampler
from metajax.step import TrainState, create_train_state, make_meta_train_step
from metajax.types import Split, Task

__version__ = '0.3.0'

__all__ = ['Adapted', 'algorithms', 'build_run', 'Config', 'create_train_state', 'episode_sampler',
           'load_learner',
           'load_run', 'make_meta_train_step', 'MetaLearner', 'Run', 'Split', 'Task',
           'train_and_evaluate', 'TrainState']
