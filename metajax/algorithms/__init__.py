"""Meta-learning algorithms: one factory per algorithm, each registered by its module.

`registry.ALGORITHMS` maps each name to its `AlgorithmSpec` (settings,
defaults, capabilities, how a config builds it); importing this package
registers every algorithm below, in this order (the order of `--help`).
"""
# pylint: disable=g-bad-import-order

from metajax.algorithms import registry
from metajax.algorithms.registry import ALGORITHMS, AlgorithmSpec
from metajax.algorithms.maml import maml, fomaml, anil, metasgd
from metajax.algorithms.mamlpp import mamlpp
from metajax.algorithms.reptile import reptile
from metajax.algorithms.imaml import imaml
from metajax.algorithms.pretrained import pretrained
from metajax.algorithms.protonet import protonet
from metajax.algorithms.matching import matching
from metajax.algorithms.relation import relation
from metajax.algorithms.r2d2 import r2d2
from metajax.algorithms.metaoptnet import metaoptnet
from metajax.algorithms.incontext import incontext
from metajax.algorithms.predictor import predictor
from metajax.algorithms.finetune import finetune
from metajax.algorithms.transductive import transductive
from metajax.algorithms.boil import boil

__all__ = ['ALGORITHMS', 'AlgorithmSpec', 'registry', 'maml', 'fomaml', 'anil', 'metasgd',
           'mamlpp', 'imaml', 'reptile', 'pretrained', 'protonet', 'matching', 'relation', 'r2d2',
           'metaoptnet', 'incontext', 'predictor', 'finetune', 'transductive', 'boil']
