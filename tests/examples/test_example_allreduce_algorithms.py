"""examples/allreduce_algorithms.py: every registered algorithm prints the sum numpy computes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from examples_helpers import run_example

import mpiml


@pytest.mark.parametrize("ranks", [2, 3])
def test_every_algorithm_prints_the_sum(ranks):
    out = run_example("allreduce_algorithms.py", ranks).stdout
    printed = dict(re.findall(r"^ *(\w+): \[(.*)\]$", out, re.M))
    assert list(printed) == list(mpiml.ALGORITHMS["allreduce"]), out
    expected = sum(np.arange(7.0) * (r + 1) for r in range(ranks))
    for name, values in printed.items():
        assert np.array_equal(np.array(values.split(), dtype=float), expected), name
