"""metajax: meta-learning and few-shot learning in JAX. Pure Python."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
  """metajax.__version__, read from the package without importing it (one source of truth)."""
  with open(os.path.join(HERE, 'metajax', '__init__.py')) as f:
    return re.search(r"^__version__ = '([^']+)'", f.read(), re.MULTILINE).group(1)


def requirements():
  with open(os.path.join(HERE, 'requirements.txt')) as f:
    return [line.strip() for line in f if line.strip() and not line.startswith('#')]


setup(
    name='metajax',
    version=version(),
    description='Meta-learning (MAML, Reptile, ANIL, Meta-SGD, ...) and few-shot learning in JAX',
    long_description=open(os.path.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['metajax', 'metajax.*']),
    package_data={'metajax.data': ['splits/*.json']},
    python_requires='>=3.10',
    install_requires=requirements(),
    extras_require={
        # The README's test command installs it: a test reads the event files
        # back with TensorBoard's own reader.
        'test': ['pytest==9.2.0', 'pytest-xdist==3.8.0', 'tensorboard==2.21.0'],
        # `tensorboard --logdir RUN` on the event files every run writes.
        'tensorboard': ['tensorboard==2.21.0'],
        # The documentation site: `mkdocs build --strict` (CI) or `mkdocs serve`.
        'docs': ['mkdocs==1.6.1', 'mkdocs-material==9.8.1', 'mkdocstrings==1.0.8',
                 'mkdocstrings-python==2.0.11'],
        # Side-by-side benchmarks. learn2learn 0.2.0 does not build from PyPI on
        # Python 3.11; see docs/speed.md for its install steps.
        'bench': ['torch==2.13.0'],
    },
    license='Apache-2.0',
)
