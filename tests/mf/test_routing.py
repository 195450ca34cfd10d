"""The routing plans of partitioned factors (pure), their initial blocks, the layout rule, and p = 1."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from partitioned_cases import mismatches

from mpiml.errors import ArgumentError
from mpiml.mf import routing
from mpiml.mf.als import Layout, initial_factors
from mpiml.mf.partitioned import AUTO_MIN_BYTES, choose, initial_blocks


def test_each_rank_receives_exactly_the_rows_it_references():
    rng = np.random.default_rng(0)
    for size in range(1, 6):
        n = int(rng.integers(0, 30))
        cuts = np.sort(rng.integers(0, n + 1, size - 1))
        bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)   # empty blocks included
        full = rng.normal(size=(n, 3))
        needed = [routing.referenced(rng.integers(0, n, rng.integers(0, 12))) if n else np.zeros(0, np.int64)
                  for _ in range(size)]
        asked = [routing.split_by_owner(need, bounds) for need in needed]
        routes = [routing.make_route(needed[r], [asked[s][r] for s in range(size)], bounds, r) for r in range(size)]
        blocks = [full[bounds[r]:bounds[r + 1]] for r in range(size)]
        got = routing.simulate(blocks, routes)
        for r in range(size):
            np.testing.assert_array_equal(got[r], full[needed[r]])
            assert routes[r].recv_counts.tolist() == [a.size for a in asked[r]]
            assert routes[r].received() == sum(a.size for s, a in enumerate(asked[r]) if s != r)
        assert sum(route.sent() for route in routes) == sum(route.received() for route in routes)
        # the way back: each owner gets, per source in rank order, one row per row it sends that source
        parts = [np.column_stack([np.full(needed[s].size, s), needed[s]]) for s in range(size)]
        back = routing.simulate_back(parts, routes)
        for r in range(size):
            expected = [(s, g) for s in range(size) for g in asked[s][r]]
            assert back[r].tolist() == [list(e) for e in expected]
            assert back[r].shape[0] == routes[r].send_rows.size


def test_plan_helpers():
    assert routing.referenced([5, 1, 5, 3]).tolist() == [1, 3, 5]
    assert routing.owner_counts([0, 2, 3, 7], [0, 3, 3, 8]).tolist() == [2, 0, 2]
    assert routing.local_columns([7, 2, 7], [2, 5, 7]).tolist() == [2, 0, 2]
    with pytest.raises(ArgumentError):
        routing.make_route([3, 1], [[], []], [0, 2, 4], 0)           # not sorted
    with pytest.raises(ArgumentError):
        routing.make_route([1], [[3], []], [0, 2, 4], 0)             # a request outside the block


@pytest.mark.parametrize("biases", [False, True])
def test_initial_blocks_are_slices_of_the_replicated_draw(biases, monkeypatch):
    import mpiml.mf.partitioned as part

    monkeypatch.setattr(part, "DRAW_CHUNK", 7)   # skipping crosses many chunk edges
    layout = Layout(4, biases)
    p, q = initial_factors(3, 23, 11, layout)
    for (u0, u1), (i0, i1) in [((0, 23), (0, 11)), ((5, 9), (11, 11)), ((23, 23), (2, 10))]:
        pb, qb = initial_blocks([3, 11], 4 ** -0.5, 23, layout, (u0, u1), (i0, i1))
        np.testing.assert_array_equal(pb, p[u0:u1])
        np.testing.assert_array_equal(qb, q[i0:i1])


def test_auto_layout_rule():
    big = 2 * AUTO_MIN_BYTES
    assert choose("auto", 1, big, 0, 100) == "replicated"                 # one rank: nothing to save
    assert choose("auto", 4, AUTO_MIN_BYTES - 1, 0, 100) == "replicated"  # small: latency-bound
    assert choose("auto", 4, big, 50, 100) == "partitioned"
    assert choose("auto", 4, big, 51, 100) == "replicated"
    assert choose("auto", 4, big, 99, 100, memory=4 * big) == "partitioned"   # the full factors would crowd memory
    assert choose("auto", 4, big) == "partitioned"                        # DSGD: by size
    assert choose("replicated", 4, big, 0, 100) == "replicated"
    with pytest.raises(ArgumentError):
        choose("sharded", 4, big)


def test_partitioned_equals_replicated_on_one_rank():
    assert mismatches(MPI.COMM_SELF) == []


def test_memory_guard_predicts_partitioned_factors_per_rank():
    from mpiml.plan.memory import memory_per_rank
    from mpiml.plan.spec import Job, Layout

    def model(layout, p):
        job = Job("mf", "als", users=10**7, items=10**5, ratings=10**8, factors=32, factor_layout=layout)
        return memory_per_rank(job, Layout(1, p))["model"]

    assert model("partitioned", 1) == model("replicated", 1) == model("replicated", 16)
    assert model("partitioned", 16) < model("replicated", 16) / 4
