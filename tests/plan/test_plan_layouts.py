"""Candidate layouts and the goal that picks one: against brute-force enumeration and hand-made predictions."""

from __future__ import annotations

import itertools

import pytest

from mpiml.errors import ArgumentError
from mpiml.plan import Cluster, Job, Layout, Prediction
from mpiml.plan.layouts import candidates, choose, clock, duration, grid_of, parse_clock, rows_of

SGD = Job("sgd", "sync", rows=10_000, features=100, nnz=1_000_000, dense=True)
MF = Job("mf", "als", users=1000, items=500, ratings=50_000)


def brute_force(job, nodes_max, cores):
    """Every (nodes, ranks/node, threads, R, C) the planner should weigh, written out independently."""
    nodes = [n for n in range(1, nodes_max + 1) if n & (n - 1) == 0 or n == nodes_max]
    ranks = [r for r in range(1, cores + 1) if r & (r - 1) == 0 or r == cores]
    out = set()
    for n, r in itertools.product(nodes, ranks):
        for t in {1, cores // r}:
            p = n * r
            pairs = [(p, 1)] if job.kind == "mf" else [(p // c, c) for c in range(1, p + 1) if p % c == 0]
            out |= {(n, r, t, R, C) for R, C in pairs if C <= max(job.features, 1)}
    return out


@pytest.mark.parametrize("job,nodes_max,cores", [(SGD, 4, 8), (SGD, 6, 12), (MF, 8, 16), (SGD, 1, 2),
                                                 (Job("sgd", "lbfgs", rows=50, features=3, nnz=150), 4, 4)])
def test_candidates_are_every_layout_the_cluster_holds(job, nodes_max, cores):
    layouts = candidates(job, Cluster(nodes_max, cores, 1 << 34))
    seen = {(lay.nodes, lay.ranks_per_node, lay.threads_per_rank, *grid_of(lay)) for lay in layouts}
    assert len(seen) == len(layouts)  # no layout twice
    assert seen == brute_force(job, nodes_max, cores)
    for lay in layouts:
        assert lay.ranks_per_node * lay.threads_per_rank <= cores
        R, C = grid_of(lay)
        assert lay.parallel == ("data" if C == 1 else "model" if R == 1 else "hybrid")


def test_candidates_honour_fixed_dimensions_and_parallel_kind():
    cluster = Cluster(8, 16, 1 << 34)
    layouts = candidates(SGD, cluster, parallel="model", nodes=2, ranks_per_node=4)
    assert layouts and all((lay.nodes, lay.ranks_per_node, lay.parallel) == (2, 4, "model") for lay in layouts)
    assert {lay.threads_per_rank for lay in layouts} == {1, 4}
    assert {lay.threads_per_rank for lay in candidates(SGD, cluster, threads=2)} == {2}
    assert {lay.parallel for lay in candidates(MF, cluster)} == {"data"}
    with pytest.raises(ArgumentError):
        candidates(MF, Cluster(1, 1, 1 << 30), parallel="model")


def row(seconds, core_hours, memory=1 << 20, parallel="data", ranks=1, nodes=1):
    layout = Layout(nodes, ranks, 1, parallel)
    return layout, Prediction(seconds / 10, "epoch", seconds, seconds / 100, memory, core_hours)


def make(*specs, mem=1 << 30, deadline=None):
    layouts, predictions = zip(*(row(*spec) for spec in specs))
    return rows_of(layouts, predictions, Cluster(4, 8, mem), deadline)


def test_fastest_takes_the_cheapest_layout_within_five_percent():
    rows = make((100, 8.0), (104, 2.0), (106, 1.0), (300, 0.5))
    index, why = choose(rows, "fastest")
    assert index == 1 and "within 5% of the fastest" in why
    index, why = choose(make((100, 8.0), (120, 2.0)), "fastest")
    assert index == 0 and why.startswith("fastest (0:01:40)")


def test_core_hours_and_deadline_goals():
    rows = make((100, 8.0), (200, 2.0), (400, 1.0))
    assert choose(rows, "core-hours")[0] == 2
    index, why = choose(rows, "deadline", deadline=250)
    assert index == 1 and "finish within the deadline 0:04:10" in why
    index, why = choose(rows, "deadline", deadline=50)
    assert index == 0 and "no layout finishes within the deadline" in why


def test_layouts_that_do_not_fit_in_memory_are_chosen_only_when_none_fits():
    # 2 ranks per node of 600 MiB each do not fit a 1 GiB node; 1 rank does.
    rows = make((100, 1.0, 600 << 20, "data", 2), (300, 3.0, 600 << 20, "data", 1))
    assert [r.fits for r in rows] == [False, True]
    assert choose(rows, "fastest")[0] == 1
    rows = make((100, 1.0, 2 << 30, "data", 2), (300, 3.0, 2 << 30, "data", 1))
    index, why = choose(rows, "core-hours")
    assert index == 0 and "no layout fits in a node's memory" in why


def test_why_compares_the_best_layout_of_another_kind():
    rows = make((100, 8.0, 1 << 20, "model", 4), (250, 2.0, 1 << 20, "data", 4))
    assert "the best data-parallel layout would take 2.50x the time" in choose(rows, "fastest")[1]


def test_clock_forms():
    assert [clock(s) for s in (0.2, 59.5, 3600, 90061)] == ["0:00:01", "0:01:00", "1:00:00", "1-01:01:01"]
    assert duration(12.34) == "12.3 s" and duration(125) == "0:02:05"
    assert parse_clock("1:30:00") == 5400 and parse_clock("2-00:00:00") == 172800
    with pytest.raises(ArgumentError, match="--deadline"):
        parse_clock("1:99:00")
