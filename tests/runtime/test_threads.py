"""BLAS threads per rank: the node's cores split among its ranks, unless the user chose."""

from __future__ import annotations

import json
import os
import sys

import pytest
from mpirun import run_mpi

from mpiml.runtime.threads import cores_per_local_rank, limit_blas_threads, node_cores


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


@pytest.mark.mpi
def test_a_node_is_the_union_of_its_ranks_affinity_when_the_launcher_binds_each():
    from mpi4py import MPI

    from mpiml.plan.probe import _node_ratio

    comm = MPI.COMM_WORLD
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    before = os.sched_getaffinity(0)
    cpus = sorted(set().union(*node.allgather(sorted(before))))
    mine = {cpus[node.rank % len(cpus)]}   # bound as srun or `mpiexec -bind-to core` binds: a core each, in turn
    try:
        os.sched_setaffinity(0, mine)
        together = min(node.size, len(cpus))
        assert node_cores(node) == together
        assert _node_ratio(comm) == pytest.approx(comm.allreduce(node.size / together, op=MPI.MAX))
        assert limit_blas_threads(comm, environ={}) == 1   # its one core, whatever the node's share
    finally:
        os.sched_setaffinity(0, before)
        node.Free()
