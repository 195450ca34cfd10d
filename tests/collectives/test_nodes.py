"""The node grouping (pure functions of ranks) and the settings that emulate nodes."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import mpiml
from mpiml.collectives import nodes
from mpiml.collectives.algorithms import hierarchical
from mpiml.collectives.algorithms.hierarchical import between_nodes, reduce_in_rank_order


@pytest.mark.parametrize("size", range(1, 8))
@pytest.mark.parametrize("per_node", (1, 2, 3, 8))
def test_emulated_nodes_are_blocks_of_consecutive_ranks(size, per_node):
    for rank in range(size):
        g = nodes.grouping(rank, size, per_node)
        assert g.node == rank // per_node and g.local_rank == rank % per_node
        assert g.members[g.node][g.local_rank] == rank
        assert sum(len(m) for m in g.members) == size and g.nodes == -(-size // per_node)
        assert g.leaders == tuple(range(0, size, per_node))
        assert g.local_size == min(per_node, size - g.node * per_node)
        assert g.slices == min(len(m) for m in g.members)


def test_real_nodes_group_by_key_in_order_of_their_lowest_rank():
    keys = ["b", "a", "b", "c", "a"]  # round-robin placement: nodes interleave ranks
    groupings = [nodes.grouping_from_nodes(r, keys) for r in range(5)]
    assert groupings[0].members == ((0, 2), (1, 4), (3,))
    assert [(g.node, g.local_rank) for g in groupings] == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1)]
    assert groupings[0].slices == 1 and groupings[0].leaders == (0, 1, 3)


def test_slices_follow_array_split():
    for n in (0, 1, 5, 13):
        for slices in (1, 2, 3):
            expected = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(n), slices)]).tolist()
            assert nodes.slice_bounds(n, slices) == expected


def test_ranks_per_node_comes_from_the_setting_then_the_environment(monkeypatch):
    monkeypatch.delenv(nodes.ENV, raising=False)
    assert nodes.set_ranks_per_node(None) is None and nodes.ranks_per_node() is None
    monkeypatch.setenv(nodes.ENV, "3")
    assert nodes.ranks_per_node() == 3
    nodes.set_ranks_per_node(2)
    try:
        assert nodes.ranks_per_node() == 2
    finally:
        nodes.set_ranks_per_node(None)
    for bad in ("0", "x", "-1"):
        monkeypatch.setenv(nodes.ENV, bad)
        with pytest.raises(mpiml.ArgumentError, match=nodes.ENV):
            nodes.ranks_per_node()
    for bad in (0, 1.5, True):
        with pytest.raises(mpiml.ArgumentError):
            nodes.set_ranks_per_node(bad)


def test_a_slice_is_reduced_left_to_right_in_rank_order():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(6).astype(np.float32) for _ in range(5)]
    expected = functools.reduce(np.add, parts)  # ((x0 + x1) + x2) + ...: the oracle's order
    out = np.empty(6, np.float32)
    assert reduce_in_rank_order(parts, mpiml.ReduceOp(np.add), out) is out and np.array_equal(out, expected)
    # a non-commutative operator shows the order itself; out may be the first part
    minus = mpiml.ReduceOp(lambda a, b, out: np.subtract(a, b, out=out), commutative=False)
    ranks = [np.array([float(r)]) for r in range(4)]
    assert reduce_in_rank_order(ranks, minus, ranks[0])[0] == 0 - 1 - 2 - 3


def test_the_fused_sum_and_copy_matches_its_numpy_reference_bit_for_bit(monkeypatch):
    monkeypatch.setattr(hierarchical, "FUSE_BYTES", 0)
    rng = np.random.default_rng(1)
    for dtype, p in ((np.float32, 2), (np.float64, 3)):   # two compilations only (each costs a fraction of a second)
        parts = [(rng.standard_normal(9) * 10.0 ** rng.integers(-30, 30, 9)).astype(dtype) for _ in range(p)]
        parts[1][:4] = [np.nan, np.inf, -0.0, np.finfo(dtype).max]
        fast, reference = [np.empty(9, dtype) for _ in range(2)], [np.empty(9, dtype) for _ in range(2)]
        hierarchical.reduce_and_copy(parts, mpiml.ReduceOp(np.add), *fast)
        hierarchical.reduce_and_copy(parts, mpiml.ReduceOp(np.add), *reference, fuse=False)
        in_place = [part.copy() for part in parts]   # out is the first operand
        hierarchical.reduce_and_copy(in_place, np.add, np.empty(9, dtype), in_place[0])
        bits = [a.view(np.uint8) for a in (*fast, *reference, in_place[0])]
        assert all(np.array_equal(bits[0], b) for b in bits), (dtype, p)


def test_shared_memory_chunks_cover_each_slice_in_order():
    for n, slices, size, chunk_bytes in ((0, 2, 2, 4), (1, 2, 2, 4), (3, 3, 4, 4), (1001, 3, 3, 40), (10, 2, 2, 4)):
        chunks = hierarchical.chunk_count(-(-n // slices), 4, 1, chunk_bytes)
        plan = hierarchical.shared_plan(n, slices, size, chunks)
        bounds = nodes.slice_bounds(n, slices)
        assert [row[0] for row in plan[:slices]] == bounds[:-1] and [row[-1] for row in plan[:slices]] == bounds[1:]
        assert all(len(row) == chunks + 1 and row == sorted(row) for row in plan)
        assert all(max(np.diff(row), default=0) * 4 <= max(chunk_bytes, 4) for row in plan[:slices])
        assert plan[slices:] == [[n] * (chunks + 1)] * (size - slices)   # a rank beyond the slices owns none
    assert hierarchical.chunk_count(10 ** 6, 4, 2, 4) == 1   # between nodes a slice crosses whole


def test_the_between_node_step_is_a_flat_algorithm():
    assert between_nodes(8, 2) == "native"
    assert {between_nodes(n, p) for n in (8, 1 << 20, 1 << 26) for p in (2, 3, 16)} <= {
        "native", "ring", "recursive_doubling", "rabenseifner"}


def test_the_between_node_step_is_picked_on_the_link_priced():
    """The leaders' allreduce crosses the network: on a link of high latency the pick changes, and it is
    the one the same parameters price fastest."""
    from mpiml.collectives import model
    from mpiml.collectives.algorithms import hierarchical

    d = model.DEFAULT_PARAMS
    network = model.ModelParams.from_dict(dict(d.to_dict(), alpha=2e-4, beta=1e-9))   # 200 us, 1 GB/s
    changed = [(n, p) for n in (1 << 12, 1 << 16, 1 << 20) for p in (4, 8, 16)
               if between_nodes(n, p, network) != between_nodes(n, p)]
    assert changed   # the link decides, not the defaults alone
    for n, p in changed:
        times = {a: model.predict(a, n, p, network) for a in hierarchical.FLAT}
        picked = between_nodes(n, p, network)
        assert picked == "native" or times[picked] == min(times.values())


def test_a_kept_pick_is_keyed_by_a_token_that_never_names_later_parameters(monkeypatch):
    from mpiml.collectives.model import ModelParams

    a, b = ModelParams(), ModelParams(alpha=2e-6)
    token_a = hierarchical.params_token(a)
    assert token_a == hierarchical.params_token(a) != hierarchical.params_token(b)
    assert hierarchical.params_token(None) == 0
    # new parameters at the address other parameters had (the same id): the token kept under that id is not
    # theirs (a pick kept under it was made for the others)
    fresh = ModelParams(beta=3e-11)
    monkeypatch.setitem(hierarchical._tokens, id(fresh), (a, token_a))
    token = hierarchical.params_token(fresh)
    assert token not in (token_a, hierarchical.params_token(b)) and hierarchical.params_token(fresh) == token


def test_window_size_classes_waste_at_most_a_quarter_or_a_page():
    classes = {nodes.size_class(n) for n in range(1, 1 << 16, 37)}
    assert all(c % 4096 == 0 for c in classes)
    for n in (1, 4096, 4097, 5000, 1 << 20, (1 << 20) + 1, 3 << 20, 10 ** 9):
        c = nodes.size_class(n)
        assert n <= c <= max(n + 4096, 1.25 * n) and nodes.size_class(c) == c


def test_shared_arrays_refuse_a_bad_count():
    for bad in (-1, 1.5, True):
        with pytest.raises(mpiml.ArgumentError, match="count"):
            nodes.shared_array(bad)


def test_allgather_pieces_of_interleaved_nodes_go_to_their_ranks():
    from mpiml.collectives.algorithms.hierarchical_copy import to_rank_order

    sizes = np.array([2, 0, 3, 1, 2])
    pieces = [np.full(n, r, dtype=np.uint8) for r, n in enumerate(sizes)]
    for members in (((0, 2, 4), (1, 3)), ((0,), (1, 2, 3, 4)), ((0, 3), (1,), (2, 4))):
        order = [r for m in members for r in m]
        gathered = np.concatenate([pieces[r] for r in order])
        result = np.empty(sizes.sum(), dtype=np.uint8)
        to_rank_order(gathered, result, order, sizes)
        assert result.tolist() == np.concatenate(pieces).tolist()


def test_reduce_scatter_input_blocks_are_put_node_by_node():
    from mpiml.collectives.algorithms.hierarchical_scatter import node_order

    counts = np.array([2, 0, 3, 1])
    x = np.concatenate([np.full(n, r) for r, n in enumerate(counts)])
    assert node_order(x, counts, ((0, 1), (2, 3))) is x   # consecutive nodes: no copy
    got = node_order(x, counts, ((0, 2), (1, 3)))
    assert got.tolist() == [0, 0, 2, 2, 2, 3]


def test_a_flag_wait_gives_up_with_an_error_after_its_limit(monkeypatch):
    monkeypatch.setattr(nodes, "WAIT_LIMIT", 0.02)
    monkeypatch.setattr(nodes, "NAP_AFTER", 0.01)
    cell = np.zeros(2, np.int64)
    with pytest.raises(mpiml.MpimlError, match="node rank 1 did not arrive"):
        nodes._spin(cell, 1, 3, 1)
    cell[1] = 3
    nodes._spin(cell, 1, 3, 1)   # already there: returns at once
