"""Runs every ``@pytest.mark.mpi`` test under mpiexec at each rank count.

A failing assertion on any rank makes that rank's pytest exit non-zero, and so
mpiexec; a run that outlives its timeout is killed and reported as hung, with its rank
count.
"""

from __future__ import annotations

import os
import sys

import pytest
from mpirun import REPO, run_mpi

RANK_COUNTS = (1, 2, 3, 4, 5)
# Which tests run under mpiexec (CI narrows it to tests/collectives for Open MPI).
MPI_TESTS = os.environ.get("MPIML_MPI_TESTS", "tests")


def _pytest_under_mpi(ranks, *selection):
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
            "-o", "addopts=", "-rfE", "--tb=short", *selection]
    return run_mpi(ranks, argv, tag_output=True)


@pytest.mark.parametrize("ranks", RANK_COUNTS)
def test_mpi_tests_pass_at(ranks):
    result = _pytest_under_mpi(ranks, *(str(REPO / path) for path in MPI_TESTS.split(",")))
    if result.hung or result.returncode != 0:
        pytest.fail(result.describe(), pytrace=False)
