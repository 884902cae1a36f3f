"""pytest setup: absl flags parsed (absltest helpers need them) and the `omniglot` marker.

Tests marked `@pytest.mark.omniglot` read the real Omniglot release from
`$METAJAX_OMNIGLOT_DIR` (`helpers.OMNIGLOT_DIR`); without the files they are
skipped with that reason, so the suite passes on a fresh clone.

Compiled XLA programs are kept in JAX's persistent compilation cache
(`$JAX_COMPILATION_CACHE_DIR`, by default a folder in the system's temporary
directory), which the test processes and the scripts they start share: many
tests compile the same meta-step, and on two cores compiling is most of their
time. The cache is keyed by the program, the jax version and the backend, so
it changes no result; set `JAX_COMPILATION_CACHE_DIR` to choose the folder.
"""

import os
import tempfile

os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'metajax-tests-xla-{os.getuid()}'))
# XLA's CPU backend compiles without LLVM's optimisation passes: the programs
# compute the same functions (each test's comparisons run under the same
# setting), compile in about half the time and run slower, which on tests of
# a few steps is a large net gain. Speed is measured by the benchmark
# scripts, never here. METAJAX_TEST_XLA_OPT=1 keeps XLA's default.
if os.environ.get('METAJAX_TEST_XLA_OPT') != '1' and (
    'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', '')):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()

from absl import flags  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tests import helpers

flags.FLAGS.mark_as_parsed()
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])

SKIP_REASON = ('real Omniglot not found: set $METAJAX_OMNIGLOT_DIR to the folder holding '
               'images_background.zip and images_evaluation.zip')


def pytest_configure(config):
  config.addinivalue_line('markers', 'omniglot: needs the real Omniglot release '
                          '($METAJAX_OMNIGLOT_DIR); skipped without it')


def pytest_runtest_setup(item):
  if item.get_closest_marker('omniglot') is not None and not helpers.HAVE_OMNIGLOT:
    pytest.skip(SKIP_REASON)
