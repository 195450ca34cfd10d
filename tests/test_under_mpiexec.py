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
# Which tests run under mpiexec (CI narrows it to tests/collectives for Open MPI); when set, at every count.
MPI_TESTS = os.environ.get("MPIML_MPI_TESTS")
# Every MPI test runs at 2, 3 and 5 ranks. The collectives also at 1 (a communicator of one is a
# case of every algorithm) and at 4 (recursive doubling and Rabenseifner take their power-of-two
# paths), and the grids at 4 (the square 2 x 2 grid); the jobs' own tests at 1 and 4 would repeat
# what the serial tests and the other counts already show, for a quarter of the suite's time.
# The asynchronous strategies run at every count: their message timing, not the arithmetic, is what
# changes with the rank count (and a hang shows at one count only). Partitioned factors also run at 4:
# their blocks, routes and hot rows' partial sums change with the rank count (p = 1 is a serial test).
ASYNC = ("tests/train/test_async_mpi.py", "tests/mf/test_nomad_mpi.py")
SELECTION = {1: ("tests/collectives", *ASYNC),
             4: ("tests/collectives", "tests/parallel", *ASYNC, "tests/mf/test_partitioned_mpi.py")}


def mpi_test_files(paths) -> list[str]:
    """The test files under ``paths`` that hold ``@pytest.mark.mpi`` tests.

    Handing mpiexec's pytest these files rather than whole folders spares every rank the import
    of the serial test modules (scikit-learn, matplotlib, ...): at 5 ranks on 2 cores that
    collection alone took 18 s instead of 7, for the same tests.
    """
    files = []
    for path in (REPO / p for p in paths):
        candidates = [path] if path.is_file() else sorted(path.rglob("test_*.py"))
        files += [str(f) for f in candidates
                  if f.name != "test_under_mpiexec.py" and "pytest.mark.mpi" in f.read_text()]
    return files


def _pytest_under_mpi(ranks, *selection):
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
            "-o", "addopts=", "-rfE", "--tb=short", *selection]
    return run_mpi(ranks, argv, tag_output=True)


@pytest.mark.parametrize("ranks", RANK_COUNTS)
def test_mpi_tests_pass_at(ranks):
    paths = MPI_TESTS.split(",") if MPI_TESTS else SELECTION.get(ranks, ("tests",))
    files = mpi_test_files(paths)
    if not files:
        pytest.skip(f"no @pytest.mark.mpi tests under {', '.join(paths)}")
    result = _pytest_under_mpi(ranks, *files)
    if result.hung or result.returncode != 0:
        pytest.fail(result.describe(), pytrace=False)
