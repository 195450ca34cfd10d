"""The node-aware algorithms on emulated nodes of 1, 2 and 3 ranks (the contract, bitwise on every
rank), their sub-communicators and windows freed with the communicator."""

from __future__ import annotations

import numpy as np
import pytest
from collective_contract import check
from mpi4py import MPI
from mpi_helpers import agree

import mpiml
from mpiml.collectives import nodes
from mpiml.collectives.algorithms import hierarchical

NODE_AWARE = (("allreduce", "hierarchical"), ("allreduce", "hierarchical_slices"), ("allreduce", "shared_memory"),
              ("bcast", "hierarchical"), ("allgather", "hierarchical"), ("reduce_scatter", "hierarchical"))


@pytest.fixture
def emulate():
    """``emulate(k)``: nodes of k consecutive ranks for this test only."""
    previous = nodes.set_ranks_per_node(None)
    yield nodes.set_ranks_per_node
    nodes.set_ranks_per_node(previous)


def slow_network():
    """This host's defaults inside a node; between nodes 20x the latency and 10x the time per byte."""
    from mpiml.collectives import model

    d = model.DEFAULT_PARAMS
    return model.ModelParams.from_dict(dict(d.to_dict(), intra_alpha=d.alpha, intra_beta=d.beta, alpha=20 * d.alpha,
                                            beta=10 * d.beta))


@pytest.fixture
def tuned_comm():
    """``tuned_comm(params)``: a duplicate of COMM_WORLD with a tuning of ``params`` in force (None: no
    tuning); the tuning reset and the communicators freed after the test."""
    from mpiml.collectives import select
    from mpiml.collectives.tuning import Tuning

    made = []

    def make(params=None):
        select.set_tuning(None if params is None else Tuning({}, params))
        made.append(MPI.COMM_WORLD.Dup())
        return made[-1]

    yield make
    select.set_tuning(None)
    for comm in made:
        comm.Free()


def record_runs(monkeypatch, names, ran):
    """Wrap the registered allreduce algorithms ``names`` so that each run appends its name to ``ran``."""
    import dataclasses

    from mpiml.collectives import registry

    for name in names:
        entry = registry.get("allreduce", name)
        monkeypatch.setitem(registry._TABLES["allreduce"], name, dataclasses.replace(
            entry, run=lambda *a, _name=name, _run=entry.run, **k: ran.append(_name) or _run(*a, **k)))


# Per rank count, the emulated node size each node-aware algorithm is checked with: sizes below p only
# (one node of all ranks is this host's real layout, which the shared contract test checks), spread so that
# the runs at p = 2..5 check every algorithm with nodes of 1, 2 and 3 ranks, uneven (3 = 2 + 1, 4 = 3 + 1,
# 5 = 3 + 2) and with slices of two ranks per node (5 = 3 + 2), at most one check per algorithm and launch
# and few at the oversubscribed p = 4 and 5.
AR_H, AR_S, AR_M, BC_H, AG_H, RS_H = NODE_AWARE
EMULATED = {2: {AR_H: 1, AR_S: 1, AR_M: 1, BC_H: 1, AG_H: 1, RS_H: 1},
            3: {AR_H: 2, AR_S: 2, AR_M: 2, BC_H: 2, AG_H: 2, RS_H: 2},
            4: {AR_H: 3, BC_H: 3},
            5: {AR_S: 3, AR_M: 3, AG_H: 3, RS_H: 3}}


def emulated_sizes(p):
    """``{(collective, algorithm): ranks per node}`` checked at ``p`` ranks."""
    return EMULATED.get(p, {})


def test_every_algorithm_meets_every_emulated_node_size_over_the_rank_counts():
    seen = {(name, k) for p in (2, 3, 4, 5) for name, k in emulated_sizes(p).items()}
    assert seen == {(name, k) for name in NODE_AWARE for k in (1, 2, 3)}
    assert all(k < p for p in EMULATED for k in EMULATED[p].values())


@pytest.mark.mpi
def test_node_aware_algorithms_meet_the_contract_on_emulated_nodes(emulate):
    for (collective, algorithm), per_node in emulated_sizes(MPI.COMM_WORLD.size).items():
        emulate(per_node)
        check(collective, algorithm)


@pytest.mark.mpi
def test_real_nodes_of_one_host_are_one_node():
    world = MPI.COMM_WORLD
    g = nodes.layout(world, None).grouping
    agree(world, g.nodes == 1 and g.members == (tuple(range(world.size)),) and g.local_rank == world.rank, g)


@pytest.mark.mpi
def test_layouts_and_windows_are_freed_with_their_communicator(emulate):
    world = MPI.COMM_WORLD
    emulate(2)
    before = len(nodes._live)
    comm = world.Dup()
    x = np.arange(5000, dtype=np.float64) * (world.rank + 1)
    for algorithm in (name for collective, name in NODE_AWARE if collective == "allreduce"):
        got = mpiml.allreduce(x, algorithm=algorithm, comm=comm)
        agree(world, np.array_equal(got, np.arange(5000.0) * (world.size * (world.size + 1) // 2)), algorithm)
    grown = len(nodes._live)
    comm.Free()
    made = 1 if world.size > 1 else 0   # one rank never reaches an algorithm: a local copy
    agree(world, grown == before + made and len(nodes._live) == before, (before, grown, len(nodes._live)))


@pytest.mark.mpi
@pytest.mark.parametrize("per_node", (None, 2))
def test_shared_memory_reads_inputs_in_shared_arrays_where_they_are(emulate, per_node, monkeypatch):
    """Any subset of the ranks may pass a shared array: the same bits as with private inputs; slices
    whole or in chunks (one node; some empty, the last one shorter)."""
    world = MPI.COMM_WORLD
    emulate(per_node)
    problems = []
    for n in (0, 1, world.size + 1, 1001):
        buf = nodes.shared_array(n, np.float64)
        for mask in range(1 << min(world.size, 3)):   # which of the first three ranks pass their shared array
            monkeypatch.setattr(hierarchical, "CHUNK_BYTES", (8 if n < 100 else 800) if mask % 2 == 0 else 1 << 62)
            x = np.arange(n) * (world.rank + 1) / 7
            use = (mask >> world.rank) & 1
            src = buf if use else x.copy()
            src[:] = x
            private = mpiml.allreduce(x, algorithm="shared_memory")
            shared = mpiml.allreduce(src, algorithm="shared_memory")
            in_place = mpiml.allreduce(src, algorithm="shared_memory", out=src)
            expected = np.arange(n) * sum(r + 1 for r in range(world.size)) / 7
            if not (np.array_equal(shared, private) and in_place is src and np.array_equal(src, private)
                    and np.allclose(private, expected)):
                problems.append((n, mask))
            digests = world.allgather(shared.tobytes())
            if any(d != digests[0] for d in digests):
                problems.append((n, mask, "differs between ranks"))
        del buf
    agree(world, not problems, problems[:3])


@pytest.mark.mpi
def test_auto_keys_its_choice_by_the_node_layout(emulate, monkeypatch, tuned_comm):
    """A tuning with a slow link between nodes: auto picks what the node model picks on the layout
    (node-aware from 2 ranks a node), bitwise the library's result on every rank."""
    from mpiml.collectives import model_nodes

    world = MPI.COMM_WORLD
    per_node = 1 if world.size <= 2 else 2
    emulate(per_node)
    slow = slow_network()
    sizes = model_nodes.node_sizes(world.size, per_node)
    ran, layout = [], nodes.layout
    monkeypatch.setattr(nodes, "layout", lambda comm, *a: ran.append(1) or layout(comm, *a))
    comm = tuned_comm(slow)
    problems = []
    for collective, n in (("allreduce", 3), ("allreduce", 20000), ("reduce_scatter", 1000), ("allgather", 500),
                          ("bcast", 700)):
        x = (np.arange(n) % 97 + world.rank).astype(np.float64)   # sums exact in any order
        expected = model_nodes.winner(collective, n * 8 * (world.size if collective == "allgather" else 1),
                                      sizes, slow)
        call = {"allreduce": lambda a, algorithm: mpiml.allreduce(a, algorithm=algorithm, comm=comm),
                "reduce_scatter": lambda a, algorithm: mpiml.reduce_scatter(a, algorithm=algorithm, comm=comm),
                "allgather": lambda a, algorithm: mpiml.allgather(a, algorithm=algorithm, comm=comm),
                "bcast": lambda a, algorithm: mpiml.bcast(a.copy(), algorithm=algorithm, comm=comm)}[collective]
        call(x, "native")   # the layout is made at the first call (enter)
        ran.clear()
        got, ref = call(x, "auto"), call(x, "native")
        aware = expected in model_nodes.NODE_AWARE[collective]
        if bool(ran) != aware or (per_node > 1 and not aware) or not np.array_equal(got, ref):
            problems.append((collective, n, expected, bool(ran)))
        digests = world.allgather(got.tobytes())
        if collective != "reduce_scatter" and any(digest != digests[0] for digest in digests):
            problems.append((collective, n, "differs between ranks"))
    agree(world, not problems, problems)


@pytest.mark.mpi
def test_changing_the_emulated_nodes_mid_program_rechooses_the_algorithm(emulate, monkeypatch, tuned_comm):
    """Repeated calls keep a plan; set_ranks_per_node drops it, so the next call picks on the new layout."""
    from mpiml.collectives import model_nodes, select

    world = MPI.COMM_WORLD
    slow = slow_network()
    per_node = max(1, world.size - 1)   # 2 or more nodes; shared_memory has a node of several ranks from p = 3
    ran = []
    record_runs(monkeypatch, ["shared_memory"], ran)
    comm = tuned_comm(slow)
    counts = [n for n in (3, 1000, 20000, 300000)
              if (model_nodes.winner("allreduce", n * 8, model_nodes.node_sizes(world.size, per_node), slow)
                  == "shared_memory") != (select.choose("allreduce", "auto", n * 8, world.size) == "shared_memory")]
    n = counts[0] if counts else 20000
    x = (np.arange(n) % 97 + world.rank).astype(np.float64)   # sums exact in any order
    expected, out = mpiml.allreduce(x, algorithm="native", comm=comm), np.empty_like(x)
    problems = []
    for layout in (None, per_node, None, per_node):
        emulate(layout)
        sizes = model_nodes.node_sizes(world.size, layout) if layout else (world.size,)
        aware = len(sizes) > 1 and model_nodes.winner("allreduce", n * 8, sizes, slow) == "shared_memory"
        ran.clear()
        for _ in range(4):   # a plan is kept for calls with out= given: from the second call on
            got = mpiml.allreduce(x, out=out, comm=comm)
            if not np.array_equal(got, expected):
                problems.append((layout, "wrong result"))
        if (len(ran) == 4) != aware or len(ran) not in (0, 4):
            problems.append((layout, n, aware, len(ran)))
    if world.size >= 3 and not counts:
        problems.append("no message size where the layouts pick differently: the test checks nothing")
    agree(world, not problems, problems)


@pytest.mark.mpi
def test_the_leaders_allreduce_follows_the_tuning_in_force(emulate, monkeypatch, tuned_comm):
    """hierarchical's between-node allreduce is picked on the tuning's link (the network), picked again
    when the tuning changes; the results stay the library's bitwise."""
    from mpiml.collectives import model, select
    from mpiml.collectives.tuning import Tuning

    world = MPI.COMM_WORLD
    emulate(1)   # every rank a node: the between-node allreduce is the whole call
    network = model.ModelParams.from_dict(dict(model.DEFAULT_PARAMS.to_dict(), alpha=2e-4, beta=1e-9))
    ran = []
    record_runs(monkeypatch, hierarchical.FLAT, ran)
    comm = tuned_comm(None)
    problems = []
    for n in (1 << 10, 1 << 14, 1 << 18):   # float64 elements
        x = (np.arange(n) % 97 + world.rank).astype(np.float64)   # sums exact in any order
        expected = mpiml.allreduce(x, algorithm="native", comm=comm)
        for tuning in (None, Tuning({}, network), None):
            select.set_tuning(tuning)
            want = hierarchical.between_nodes(n * 8, world.size, None if tuning is None else network)
            ran.clear()
            got = mpiml.allreduce(x, algorithm="hierarchical", comm=comm)
            if ran != ([want] if world.size > 1 else []) or not np.array_equal(got, expected):   # p=1: a copy
                problems.append((n, tuning is not None, want, ran[:]))
    agree(world, not problems, problems)
