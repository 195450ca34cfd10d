"""The node-aware cost model against hand counts of each algorithm's steps, and its flat limits."""

from __future__ import annotations

import pytest

from mpiml.collectives import model, model_nodes
from mpiml.collectives.model import ModelParams, native_extra_at
from mpiml.collectives.model_nodes import node_sizes, predict_nodes
from mpiml.perf.tune import extra_by_size

# Round numbers: between nodes alpha 1, beta 0.01; inside a node alpha 0.5, beta 0.001.
P = ModelParams(alpha=1.0, beta=0.01, gamma=0.001, copy=0.0001, step_overhead=2.0, call_overhead=10.0,
                native_fault=0.5, fault_bytes=10**9, segment_bytes=1000, native_extra={},
                intra_alpha=0.5, intra_beta=0.001)


def test_emulated_node_sizes_put_the_remainder_last():
    assert node_sizes(5, 2) == (2, 2, 1)
    assert node_sizes(4, 4) == (4,) and node_sizes(3, 1) == (1, 1, 1) and node_sizes(2, 3) == (2,)
    with pytest.raises(ValueError):
        node_sizes(0, 2)


def test_hierarchical_allreduce_by_hand():
    # 8 bytes on 2 nodes of 2: the library's reduce inside (binomial, one step at 0.5 + 8 * (0.001 + 0.001)),
    # plus the input's copy out of place; between the leaders native (8 bytes), in place: one recursive
    # doubling step at 1 + 8 * 0.011; the library's bcast inside: one step at 0.5 + 8 * 0.001.
    reduce = 2 + (0.5 + 8 * 0.002) + 8 * 0.0001
    between = 2 + (1 + 8 * 0.011)
    bcast = 2 + (0.5 + 8 * 0.001)
    assert predict_nodes("hierarchical", 8, (2, 2), P) == pytest.approx(10 + reduce + between + bcast)


def test_slices_on_uneven_nodes_by_hand():
    # Nodes of 2 and 1: one slice. Node 0's reduce-scatter gives rank 0 the whole vector (it receives and
    # reduces 8000 bytes: 2 + 0.5 + 16) where the hierarchical reduce takes 15.8 (the library's reduce-scatter
    # and gather, 8.5 + 0.5 + 4, after a step and the input's copy); the uneven allgather (rank 1 receives
    # 8000 bytes: 10.5) costs what the library's bcast does (10.5); the between-node step is the same.
    n = 8000
    slices = predict_nodes("hierarchical_slices", n, (2, 1), P)
    assert slices - predict_nodes("hierarchical", n, (2, 1), P) == pytest.approx((2 + 0.5 + 16) - (2 + 13 + 0.8))


def test_shared_memory_by_hand():
    # 2 nodes of 2, 8000 bytes in place: copy 4000 in, wait for the flags (2 + 0.5), reduce a 4000-byte
    # slice of 2 inputs (the peer's read at the node's link, 0.001 a byte, no faster than the add), allreduce
    # it between nodes (what hierarchical does with 4000 bytes on nodes of one rank), copy it into the result,
    # wait for the flags, copy the peer's 4000 out (at the link's 0.001, not the local copy's 0.0001).
    between = predict_nodes("hierarchical", 4000, (1, 1), P, in_place=True) - 10
    expected = 10 + 0.4 + 2.5 + 4000 * 0.001 + between + 0.4 + 2.5 + 4000 * 0.001
    assert predict_nodes("shared_memory", 8000, (2, 2), P, in_place=True) == pytest.approx(expected)
    # one node of 4, 8000 bytes: copy 6000 in, flags (2 + 0.5: one latency, not a barrier's two), reduce a
    # 2000-byte slice of 4 inputs, copy it out, flags, copy the others' 6000 out at the link's rate
    assert predict_nodes("shared_memory", 8000, (4,), P, in_place=True) == pytest.approx(
        10 + 0.6 + 2.5 + 3 * 2000 * 0.001 + 0.2 + 2.5 + 6000 * 0.001)
    # where MPI cannot map a node into one window the slices travel as messages
    assert predict_nodes("shared_memory", 8000, (2, 2), P, shares_memory=False) == pytest.approx(
        predict_nodes("hierarchical_slices", 8000, (2, 2), P))


def test_bcast_allgather_reduce_scatter_by_hand():
    # bcast 1000 bytes: the leaders' binomial step (1 + 10), the node's (0.5 + 1)
    assert predict_nodes("hierarchical", 1000, (2, 2), P, collective="bcast") == pytest.approx(10 + 13 + 3.5)
    # allgather 1000 bytes in all: gather a 250-byte piece (2 + 0.5 + 0.25), the leaders' allgather
    # (2 + 1 + 500 * 0.01), the node's bcast of the result (3.5)
    assert predict_nodes("hierarchical", 1000, (2, 2), P, collective="allgather") == pytest.approx(
        10 + 2.75 + 8 + 3.5)
    # reduce_scatter 1000 bytes: the node's reduce (4.6 with the copy), the leaders' recursive halving
    # (2 + 1 + 500 * 0.011), the scatter of one 250-byte block (2 + 0.5 + 0.25)
    assert predict_nodes("hierarchical", 1000, (2, 2), P, collective="reduce_scatter") == pytest.approx(
        10 + 4.6 + 8.5 + 2.75)
    # its temporaries (the node's sum, the node's blocks) are the workspace's, kept between calls: no fresh
    # pages priced, however large
    n, no_faults = 1 << 21, ModelParams.from_dict(dict(P.to_dict(), native_fault=0.0))
    assert (predict_nodes("hierarchical", n, (2, 2), P, collective="reduce_scatter")
            == predict_nodes("hierarchical", n, (2, 2), no_faults, collective="reduce_scatter"))


def test_flat_layouts_reduce_to_the_flat_model():
    intra = ModelParams.from_dict(dict(P.to_dict(), alpha=0.5, beta=0.001))
    for n in (8, 5000, 10**6):
        for name in ("native", "ring", "rabenseifner", "tree"):
            # one node: the intra-node link; several: the between-node one
            assert predict_nodes(name, n, (4,), P) == model.predict(name, n, 4, intra)
            assert predict_nodes(name, n, (2, 2), P) == model.predict(name, n, 4, P)
        # nodes of one rank: the between-node allreduce of everything, out of place
        pick = __import__("mpiml.collectives.algorithms.hierarchical", fromlist=["x"]).between_nodes(n, 3, P)
        alone = model.predict(pick, n, 3, P)
        for name in model_nodes.NODE_AWARE["allreduce"]:
            assert predict_nodes(name, n, (1, 1, 1), P) == pytest.approx(alone)
        # one node: hierarchical is the library's reduce and bcast, one call overhead
        assert predict_nodes("hierarchical", n, (3,), P) == pytest.approx(
            model.predict("native", n, 3, intra, collective="reduce")
            + model.predict("native", n, 3, intra, collective="bcast") - P.call_overhead)
    assert predict_nodes("hierarchical", 100, (1,), P) == model.predict("native", 100, 1, P)


def test_old_parameters_load_and_mean_one_link():
    old = {k: v for k, v in P.to_dict().items() if k not in ("intra_alpha", "intra_beta", "native_extra_by_size")}
    params = ModelParams.from_dict(old)
    assert params.intra_alpha is None and params.native_extra_by_size == {}
    assert model_nodes.intra_link(params) == model_nodes.inter_link(params) == (1.0, 0.01)


def test_native_extra_by_size_interpolates_in_log_size():
    params = ModelParams(native_extra={"reduce": 7e-9}, native_extra_by_size={"reduce": [[1024, 1e-9], [4096, 3e-9]]})
    assert native_extra_at(params, "reduce", 512) == 1e-9
    assert native_extra_at(params, "reduce", 2048) == pytest.approx(2e-9)
    assert native_extra_at(params, "reduce", 1 << 20) == 3e-9
    assert native_extra_at(params, "bcast", 2048) == 0.0
    assert native_extra_at(ModelParams(native_extra={"reduce": 7e-9}), "reduce", 2048) == 7e-9


def test_extra_by_size_recovers_the_library_excess():
    bare = ModelParams.from_dict(dict(P.to_dict(), native_extra={}))
    excess = {1 << 16: 2e-9, 1 << 20: 5e-9}
    records = [{"collective": "reduce", "algorithm": "native", "ranks": p, "bytes": n, "dtype": "float32",
                "time_median_seconds": model.predict("native", n, p, bare, collective="reduce") + n * e}
               for n, e in excess.items() for p in (2, 3)]
    fitted = extra_by_size(bare, records + [dict(records[0], algorithm="ring", time_median_seconds=1.0)])
    assert [n for n, _ in fitted["reduce"]] == sorted(excess)
    assert [e for _, e in fitted["reduce"]] == pytest.approx([excess[n] for n in sorted(excess)])


def test_a_library_faster_than_its_textbook_formula_gets_a_negative_extra_and_a_positive_price():
    # The library's bcast at 1 MiB took 0.05 ms where the formula on the ping-pong link said 0.53 ms (measured
    # at p=2): the fit keeps that, and between or beyond the measured sizes no price falls below the floor.
    bare = ModelParams.from_dict(dict(P.to_dict(), native_extra={}))
    textbook = {n: model.predict("native", n, 2, bare, collective="bcast") for n in (1 << 16, 1 << 20)}
    records = [{"collective": "bcast", "algorithm": "native", "ranks": 2, "bytes": n, "dtype": "float32",
                "time_median_seconds": 0.1 * t} for n, t in textbook.items()]
    fitted = ModelParams.from_dict(dict(bare.to_dict(), native_extra_by_size=extra_by_size(bare, records)))
    assert all(e < 0 for _, e in fitted.native_extra_by_size["bcast"])
    for n, t in textbook.items():
        assert model.predict("native", n, 2, fitted, collective="bcast") == pytest.approx(0.1 * t)
    for n in (1 << 10, 1 << 18, 1 << 30):
        price = model.predict("native", n, 2, fitted, collective="bcast")
        assert price >= model.NATIVE_FLOOR * model.predict("native", n, 2, bare, collective="bcast") > 0


def test_model_command_records_price_every_algorithm_on_the_layout():
    from mpiml.cli.model import node_records

    records = node_records("allreduce", [1, 4], [2], [8, 1 << 24], P)
    assert [(r["nodes"], r["ranks"], r["bytes"]) for r in records] == [
        (1, 2, 8), (1, 2, 1 << 24), (4, 8, 8), (4, 8, 1 << 24)]
    for rec in records:
        times = rec["predicted_seconds"]
        assert set(model_nodes.NODE_AWARE["allreduce"]) <= set(times) and "native" in times
        assert times[rec["fastest"]] == min(times.values()) and rec["best"] in times


def test_model_command_on_nodes_prints_the_layout_table(capsys):
    from mpiml.cli.model import main

    assert main(["--nodes", "2", "--ranks-per-node", "2,3", "--sizes", "64K", "--set", "alpha=5e-6,beta=1e-9"]) == 0
    text = capsys.readouterr().out
    assert "between nodes alpha 5 us, beta 1e-09" in text and "inside a node alpha 1.1 us" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("2 ")]
    assert [row[:3] for row in rows] == [["2", "2", "64K"], ["2", "3", "64K"]]
    header = next(line.split() for line in text.splitlines() if line.startswith("nodes"))
    assert {"hierarchical", "shared_memory", "native", "best"} <= set(header)


def test_uneven_nodes_charge_the_busiest_leader():
    # nodes of 2 and 1 (p = 3), 3000 bytes: node 0's block is 2000 bytes, node 1's 1000. Between the leaders,
    # the allgather's node-1 leader receives 2000 bytes (an even split: 1500) and the reduce-scatter's
    # node-0 leader 2000: at beta = 0.01, 20 each, where the flat formulas give 15.
    n, uneven = 3000, (2, 1)
    no_network = ModelParams.from_dict(dict(P.to_dict(), beta=0.0))   # the intra-node beta stays
    for collective in ("allgather", "reduce_scatter"):
        assert (predict_nodes("hierarchical", n, uneven, P, collective=collective)
                - predict_nodes("hierarchical", n, uneven, no_network, collective=collective)) == pytest.approx(20)


def test_auto_on_a_layout_is_the_node_model_winner_and_measured_rules_come_first():
    from types import SimpleNamespace

    from mpiml.collectives import nodes, select
    from mpiml.collectives.tuning import Tuning

    d = model.DEFAULT_PARAMS   # inside a node this host's defaults; between nodes 20x the latency, 10x the time per byte
    two = ModelParams.from_dict(dict(d.to_dict(), intra_alpha=d.alpha, intra_beta=d.beta, alpha=20 * d.alpha,
                                     beta=10 * d.beta))
    one = ModelParams.from_dict(dict(two.to_dict(), intra_alpha=None, intra_beta=None))

    def auto(collective, n, sizes, commutative=True, shares=True):
        context = SimpleNamespace(comm=SimpleNamespace(Get_size=lambda: sum(sizes)),
                                  plans={("node_layout", nodes._override): (sizes, shares)})
        select.enter(context)
        return select.choose(collective, "auto", n, sum(sizes), commutative)

    sizes_grid = [1 << k for k in range(0, 27, 3)] + [3 << k for k in range(4, 25, 5)]
    layouts, collectives = ((2, 2), (2, 1), (3, 3), (1, 1)), ("allreduce", "bcast", "allgather", "reduce_scatter")
    picked = set()
    try:
        select.set_tuning(Tuning({}, two))
        for layout in layouts:
            for collective in collectives:
                for n in sizes_grid:
                    got = auto(collective, n, layout)
                    assert got == model_nodes.winner(collective, n, layout, two), (collective, n, layout)
                    picked.add(got)
            assert auto("allreduce", 1 << 20, layout, commutative=False) == "native"
            # where MPI cannot map a node into one window, shared_memory is priced as the messages it sends
            assert auto("allreduce", 1 << 20, layout, shares=False) == model_nodes.winner(
                "allreduce", 1 << 20, layout, two, shares_memory=False)
        assert {"hierarchical", "shared_memory"} <= picked
        # one node: the flat model on the rank count, as before
        assert all(auto("allreduce", n, (4,)) == select.model_winner("allreduce", n, 4, two) for n in sizes_grid)
        # one link: the flat model
        select.set_tuning(Tuning({}, one))
        assert all(auto("allreduce", n, (2, 2)) == select.model_winner("allreduce", n, 4, one) for n in sizes_grid)
        # measured winners for the rank count still decide first
        select.set_tuning(Tuning({("allreduce", 4): ((0, 1000), ("ring", "native"))}, two))
        assert [auto("allreduce", n, (2, 2)) for n in (8, 5000)] == ["ring", "native"]
    finally:
        select.set_tuning(None)


def test_links_by_size_from_the_ping_pong_price_each_message_at_its_size():
    from mpiml.perf.extrapolate import parse_overrides
    from mpiml.perf.tune import link_by_size

    # one-way 2 us + 1 ns/B at 64 KiB, 0.5 ns/B at 1 MiB (fits the caches), 1 ns/B at 16 MiB
    points = link_by_size({8: 2e-6, 1 << 16: 2e-6 + 65.536e-6, 1 << 20: 2e-6 + 524.288e-6,
                           1 << 24: 2e-6 + 16.777216e-3}, 2e-6)
    assert [n for n, _ in points] == [1 << 16, 1 << 20, 1 << 24]
    assert [b for _, b in points] == pytest.approx([1e-9, 0.5e-9, 1e-9])
    params = ModelParams.from_dict(dict(P.to_dict(), rates_by_size={"beta": points, "intra_beta": [[1 << 20, 1e-10]]}))
    at = model.at_size(params, 1 << 20)
    assert at.beta == pytest.approx(0.5e-9) and at.intra_beta == pytest.approx(1e-10) and at.copy == P.copy
    assert model.at_size(params, 1 << 22).beta == pytest.approx(0.75e-9)   # log-linear between the points
    assert predict_nodes("hierarchical", 1 << 20, (2, 2), params) == predict_nodes("hierarchical", 1 << 20, (2, 2), at)
    # a what-if --set beta= holds at every size
    assert model.at_size(parse_overrides("beta=3e-9", params), 1 << 20).beta == 3e-9


def test_the_reduce_to_a_leader_is_the_binomial_tree_where_the_library_is_priced_slower():
    from mpiml.collectives.algorithms.hierarchical import node_reduce

    # MPICH's reduce of 16 MiB at p=2 took 17-20 ms where its reduce_scatter took 3.5: its fitted extra
    slow = ModelParams.from_dict(dict(P.to_dict(), native_extra={"reduce": 1.0}))
    n = 1 << 20
    assert node_reduce(n, 2, P) == "native" and node_reduce(n, 2, slow) == "binomial"
    intra = ModelParams.from_dict(dict(slow.to_dict(), alpha=0.5, beta=0.001))
    # the model prices what runs: one node of 3, hierarchical = the binomial reduce + the library's bcast
    assert predict_nodes("hierarchical", n, (3,), slow) == pytest.approx(
        model.predict("binomial", n, 3, intra, collective="reduce")
        + model.predict("native", n, 3, intra, collective="bcast") - P.call_overhead)


def test_equal_predictions_pick_the_first_candidate_whatever_the_rounding():
    assert model.fastest({"a": 1.0, "b": 1.0 - 1e-15, "c": 2.0}) == "a"
    assert model.fastest({"a": 1.0, "b": 0.9}) == "b"
