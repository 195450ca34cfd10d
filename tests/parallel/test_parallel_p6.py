"""The grid tests (SGD and L-BFGS) and the training contract at p = 6 (grids 6x1, 3x2, 2x3, 1x6), beyond the
harness's p = 1..5: one run."""

from __future__ import annotations

import sys

import pytest
from mpirun import REPO, run_mpi


def test_grid_tests_pass_at_6_ranks():
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            "-rfE", "--tb=short", str(REPO / "tests" / "parallel" / "test_parallel_grid_mpi.py"),
            str(REPO / "tests" / "parallel" / "test_parallel_checkpoint_mpi.py"),
            str(REPO / "tests" / "parallel" / "test_parallel_lbfgs_mpi.py"),
            str(REPO / "tests" / "train" / "test_train_contract_mpi.py"),
            str(REPO / "tests" / "collectives" / "test_sparse_allreduce_mpi.py")]   # issue 19: p = 1..6
    result = run_mpi(6, argv, timeout=300)
    if result.hung or result.returncode != 0:
        pytest.fail(result.describe(), pytrace=False)
