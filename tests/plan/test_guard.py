"""The guard every computing command runs first: oversubscribed cores and memory, warned once on rank 0."""

from __future__ import annotations

import io
import os

import pytest

from mpiml.plan import guard


def node(ranks, cpus, threads=1, slurm_cpus=None, memory=8 << 30):
    return {"host": "n1", "ranks": ranks, "cpus": list(range(cpus)), "threads": threads, "slurm_cpus": slurm_cpus,
            "memory": memory, "memory_from": "available memory"}


def test_cores_are_slurms_count_or_the_affinity_whichever_is_smaller():
    assert guard.cores_of(node(2, 8)) == 8
    assert guard.cores_of(node(2, 8, slurm_cpus=4)) == 4
    assert guard.cores_of(node(2, 2, slurm_cpus=4)) == 2


def test_core_warning_counts_ranks_times_threads():
    fine = guard.summarize([node(4, 4), node(2, 4)])
    assert guard.core_warning(fine) is None
    worst = guard.summarize([node(2, 4), {**node(5, 2), "host": "n2"}])
    assert worst["host"] == "n2" and worst["nodes"] == 2
    text = guard.core_warning(worst)
    assert text.startswith("5 ranks on n2 share 2 cores") and "at most 2 rank(s) per node" in text
    threaded = guard.summarize([node(2, 4, threads=4)])
    assert "2 ranks x 4 threads on n1 share 4 cores" in guard.core_warning(threaded)
    assert "at most 1 rank(s) per node with 4 threads" in guard.core_warning(threaded)


def test_oversubscribed_unbound_ranks_are_told_to_bind():
    unbound = guard.summarize([{**node(4, 2), "bound": False}])
    assert guard.core_warning(unbound).endswith("; else " + guard.BIND_HINT)
    assert "bind" not in guard.core_warning(guard.summarize([{**node(4, 2), "bound": True}]))
    assert "bind" not in guard.core_warning(guard.summarize([node(4, 2)]))   # (not known)
    assert guard.core_warning(guard.summarize([{**node(2, 2), "bound": False}])) is None


def test_bound_means_each_rank_narrower_than_the_node():
    assert guard.bound([[0], [1], [0], [1]])
    assert guard.bound([[0, 1], [2, 3]])
    assert not guard.bound([[0, 1], [0, 1], [0, 1]])
    assert not guard.bound([[0], [0, 1]])
    assert guard.bound([[0], [0]])   # one CPU: nowhere to move
    assert guard.bound([])


def test_memory_warning():
    n = node(4, 4, memory=1 << 30)
    assert guard.memory_warning(n, 200 << 20) is None
    assert guard.memory_warning(n, 300 << 20).startswith("4 ranks on n1 are predicted to need 1.2 GiB (300.0 MiB "
                                                         "each), more than the node's 1.0 GiB")


def test_node_facts_read_slurm_and_threads():
    facts = guard.node_facts({"SLURM_CPUS_ON_NODE": "3", "SLURM_MEM_PER_NODE": "2048", "OMP_NUM_THREADS": "2"})
    assert (facts["slurm_cpus"], facts["memory"], facts["threads"], facts["memory_from"]) == \
        (3, 2 << 30, 2, "Slurm's --mem")
    facts = guard.node_facts({"SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "100"})
    assert facts["memory"] == 400 << 20 and facts["threads"] == 1
    assert guard.node_facts({})["slurm_cpus"] is None


def sgd_args(*argv):
    from mpiml.cli import sgd

    args = sgd.build_parser().parse_args(list(argv))
    sgd.check(args)
    return args


@pytest.mark.mpi
def test_guard_warns_once_on_rank_zero_before_work(monkeypatch):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local = node_comm.Get_size()
    masks = node_comm.allgather(os.sched_getaffinity(0))
    cores = len(set().union(*masks))  # what the machine gives this test
    node_comm.Free()
    hint = [] if guard.bound(masks) else [guard.BIND_HINT]   # (mpiexec here binds nothing unless asked)
    one_core = {"SLURM_CPUS_ON_NODE": "1", "MPIML_GUARD": "on"}
    cases = [  # (environ, kind, args, expected fragments on rank 0, or None for no warning)
        (one_core, None, None, [f"{local} ranks on", "share 1 cores", *hint] if local > 1 else None),
        ({**one_core, "MPIML_GUARD": "off"}, None, None, None),
        ({"SLURM_CPUS_ON_NODE": str(local), "SLURM_MEM_PER_NODE": "1"}, "sgd",
         sgd_args("--data", "synthetic:classification,n=2000,d=10"),
         ["predicted to need", "more than the node's 1.0 MiB (Slurm's --mem)", "`mpiml plan` suggests"]),
        ({"SLURM_CPUS_ON_NODE": str(local), "SLURM_MEM_PER_NODE": "100000"}, "sgd",
         sgd_args("--data", "synthetic:classification,n=2000,d=10"),
         None if local <= cores else [f"{local} ranks on", f"share {cores} cores", "`mpiml plan` suggests"]),
    ]
    for environ, kind, args, expected in cases:
        monkeypatch.setattr(guard, "_checked", False)
        stream = io.StringIO()
        text = guard.check_resources(comm, kind, args, environ=environ, stream=stream)
        if comm.rank != 0 or expected is None:
            assert text is None and stream.getvalue() == ""
            continue
        assert text.startswith("mpiml: warning: ") and stream.getvalue() == text + "\n"
        for fragment in expected:
            assert fragment in text
        assert guard.check_resources(comm, kind, args, environ=environ, stream=stream) is None  # once
        assert stream.getvalue().count("mpiml: warning:") == 1
