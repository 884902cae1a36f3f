"""pytest setup: absl flags parsed (absltest helpers need them), the data path."""

import os

from absl import flags
import pytest

flags.FLAGS.mark_as_parsed()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


