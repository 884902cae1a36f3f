"""metajax: meta-learning and few-shot learning in JAX."""

from metajax import algorithms
from metajax.config import Config
from metajax.inference import TrainedLearner, load_learner
from metajax.learner import MetaLearner
from metajax.train import TrainState, load_run, make_meta_train_step, train_and_evaluate
from metajax.types import Split, Task

__version__ = '0.1.0'

__all__ = ['algorithms', 'Config', 'MetaLearner', 'Split', 'Task', 'TrainState',
           'load_learner', 'load_run', 'TrainedLearner', 'make_meta_train_step', 'train_and_evaluate']
