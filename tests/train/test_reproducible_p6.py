"""Reproducible mode (sync SGD, L-BFGS, ALS, iALS) at p = 6: sizes 1, 5 and 6 in one run (the harness stops at 5;
its runs at 2, 3 and 5 cover sizes 1..5)."""

from __future__ import annotations

import sys

import pytest
from mpirun import REPO, run_mpi


def test_reproducible_models_at_6_ranks():
    argv = [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            "-rfE", "--tb=short", str(REPO / "tests" / "train" / "test_reproducible_training_mpi.py"),
            str(REPO / "tests" / "mf" / "test_reproducible_mf_mpi.py")]
    result = run_mpi(6, argv, timeout=300)
    if result.hung or result.returncode != 0:
        pytest.fail(result.describe(), pytrace=False)
