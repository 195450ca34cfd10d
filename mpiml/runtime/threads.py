"""Keep BLAS/OpenMP threads from oversubscribing the cores that MPI ranks share."""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def own_cpus() -> set:
    """The CPUs this process may run on (its affinity; every CPU where the OS keeps none)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one, else the machine's count."""
    return max(len(own_cpus()), 1)


def node_cores(node) -> int:
    """The cores of a node's ranks together: the union of their affinity (collective over ``node``, the ranks of
    one node). Where the launcher binds each rank to its own cores (srun, ``mpiexec -bind-to core``), one rank's
    affinity is its share only, not the node's."""
    return len(set().union(*node.allgather(sorted(own_cpus()))))


def cores_per_local_rank(local_ranks: int, cores: int | None = None) -> int:
    """Threads each of ``local_ranks`` ranks on one node may use without oversubscribing."""
    if cores is None:
        cores = usable_cores()
    return max(1, int(cores or 1) // max(1, int(local_ranks)))


def limit_blas_threads(comm=None, environ=os.environ):
    """Cap BLAS/OpenMP threads at the cores per rank on this node, unless the user chose.

    If any of :data:`THREAD_VARIABLES` is set, the user's choice stands and nothing is
    changed. Otherwise (collective over ``comm``) the ranks sharing a node split its cores.
    Returns the limit applied, or None.
    """
    if any(environ.get(name) for name in THREAD_VARIABLES):
        return None
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    from mpiml.runtime.comm import resolve_comm

    node = resolve_comm(comm).Split_type(MPI.COMM_TYPE_SHARED)
    try:   # (a rank bound to fewer cores than its share gets those)
        limit = min(cores_per_local_rank(node.Get_size(), node_cores(node)), usable_cores())
    finally:
        node.Free()
    threadpool_limits(limits=limit)
    return limit
