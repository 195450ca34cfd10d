"""``mpiml info``: what this job runs on (MPI library, ranks, hosts, threads)."""

from __future__ import annotations

import os
from collections import Counter

from mpiml.cli.output import emit_json, say, table
from mpiml.cli.parser import Parser

THREAD_LEVELS = {0: "single", 1: "funneled", 2: "serialized", 3: "multiple"}


def build_parser():
    parser = Parser(
        prog="mpiml info",
        description="Report the MPI library, mpi4py, ranks, hosts and thread settings of this job.",
        epilog="example:\n  mpiexec -n 4 mpiml info --json"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def blas_threads() -> dict:
    """Threads each BLAS/OpenMP library in this process will use (via threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return {f"{pool['internal_api']}:{os.path.basename(pool['filepath'])}": pool["num_threads"]
            for pool in threadpool_info()}


def _slurm_facts():
    """The Slurm job this runs in (rank 0's view), or None outside Slurm."""
    from mpiml.slurm.env import slurm_env

    env = slurm_env()
    if not env.in_job:
        return None
    return {k: v for k, v in env.as_dict().items() if k in ("job_id", "run_id", "job_name", "nnodes",
                                                         "ntasks", "cpus_per_task", "restart_count")}


def collect(comm=None) -> dict:
    """Facts about the job, identical on every rank (gathered collectively)."""
    import mpi4py
    import numpy
    from mpi4py import MPI

    from mpiml import __version__
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    host = MPI.Get_processor_name()
    per_rank = comm.allgather({"host": host, "blas_threads": blas_threads(), "pid": os.getpid()})
    hosts = Counter(entry["host"] for entry in per_rank)
    major, minor = MPI.Get_version()
    return {
        "mpiml_version": __version__,
        "mpi4py_version": mpi4py.__version__,
        "numpy_version": numpy.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_standard": f"{major}.{minor}",
        "ranks": comm.Get_size(),
        "hosts": len(hosts),
        "ranks_per_host": dict(sorted(hosts.items())),
        "thread_level": THREAD_LEVELS.get(MPI.Query_thread(), str(MPI.Query_thread())),
        "blas_threads_per_rank": per_rank[0]["blas_threads"],
        "blas_threads_same_on_all_ranks": all(e["blas_threads"] == per_rank[0]["blas_threads"] for e in per_rank),
        "slurm": _slurm_facts(),
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    facts = collect()
    if args.json:
        emit_json(facts)
        return 0
    rows = []
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        rows.append((key, "-" if value is None else value))
    say(table(rows, ("item", "value")))
    return 0
