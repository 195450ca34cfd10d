"""BLAS threads per rank: the node's cores split among its ranks, unless the user chose."""

from __future__ import annotations

import json
import os
import sys

from mpirun import run_mpi

from mpiml.runtime.threads import cores_per_local_rank, limit_blas_threads


def test_cores_are_split_among_local_ranks():
    assert cores_per_local_rank(1, cores=16) == 16
    assert cores_per_local_rank(4, cores=16) == 4
    assert cores_per_local_rank(3, cores=16) == 5
    assert cores_per_local_rank(8, cores=2) == 1  # oversubscribed: never below one


def test_users_choice_is_left_alone():
    assert limit_blas_threads(environ={"OMP_NUM_THREADS": "3"}) is None


def test_info_reports_the_cores_split_between_the_ranks_of_the_node():
    unset = {"OMP_NUM_THREADS": "", "OPENBLAS_NUM_THREADS": "", "MKL_NUM_THREADS": ""}
    result = run_mpi(2, [sys.executable, "-m", "mpiml", "info", "--json"], timeout=120, env=unset)
    assert result.returncode == 0, result.describe()
    facts = json.loads(result.stdout)
    expected = max(1, len(os.sched_getaffinity(0)) // 2)  # unlimited, OpenBLAS would use every core
    assert set(facts["blas_threads_per_rank"].values()) == {expected}
