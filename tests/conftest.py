"""pytest setup: absl flags parsed (absltest helpers need them) and the `omniglot` marker.

Tests marked `@pytest.mark.omniglot` read the real Omniglot release from
`$METAJAX_OMNIGLOT_DIR` (`helpers.OMNIGLOT_DIR`); without the files they are
skipped with that reason, so the suite passes on a fresh clone.
"""

from absl import flags
import pytest

from tests import helpers

flags.FLAGS.mark_as_parsed()

SKIP_REASON = ('real Omniglot not found: set $METAJAX_OMNIGLOT_DIR to the folder holding '
               'images_background.zip and images_evaluation.zip')


def pytest_configure(config):
  config.addinivalue_line('markers', 'omniglot: needs the real Omniglot release '
                          '($METAJAX_OMNIGLOT_DIR); skipped without it')


def pytest_runtest_setup(item):
  if item.get_closest_marker('omniglot') is not None and not helpers.HAVE_OMNIGLOT:
    pytest.skip(SKIP_REASON)
