"""NOMAD at one rank against a serial Python reference of the same visiting order; its pure parts."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import NOMAD, dsgd, nomad
from mpiml.runtime.seeding import rank_generator

SPEC = SyntheticSpec(users=50, items=40, ratings=700, rank=3, noise=0.1, seed=5)


def serial_nomad(users, items, values, rank, reg, lr, decay, iters, seed, nblocks, biases):
    """Plain-Python NOMAD at one rank: per epoch, item blocks 0..B-1 in turn, each rating of a block
    in the order the epoch's generator draws; DSGD's initialization, loss and decay rule."""
    uid, iid = np.unique(users), np.unique(items)
    u, i = np.searchsorted(uid, users), np.searchsorted(iid, items)
    order = np.lexsort((i, u))   # the estimator's CSR order: by user, then item
    u, i, r = u[order], i[order], values[order].astype(float)
    mu = values.sum() / values.size
    width = rank + 2 if biases else rank
    rng0 = np.random.default_rng(np.random.SeedSequence([seed, 12]))
    p, q = np.zeros((uid.size, width)), np.zeros((iid.size, width))
    p[:, :rank] = rng0.normal(0.0, 0.05, size=(uid.size, rank))
    q[:, :rank] = rng0.normal(0.0, 0.05, size=(iid.size, rank))
    keep_p, keep_q = (rank + 1, rank) if biases else (None, None)
    if biases:
        p[:, keep_p], q[:, keep_q] = 1.0, 1.0
    counts_i = np.bincount(i, minlength=iid.size)
    bounds, _ = nomad.item_blocks(counts_i, 1, nblocks)
    which = np.searchsorted(bounds, i, side="right") - 1
    history, step = [], lr
    for epoch in range(iters):
        rng = rank_generator(seed, 0, 1, purpose=1000 + epoch)
        for b in range(nblocks):
            at = np.flatnonzero(which == b)
            for j in at[rng.permutation(at.size)]:
                xu, yi = p[u[j]].copy(), q[i[j]].copy()
                e = r[j] - mu - sum(xu[f] * yi[f] for f in range(width))
                for f in range(width):
                    if f != keep_p:
                        p[u[j], f] = xu[f] + step * (e * yi[f] - reg * xu[f])
                    if f != keep_q:
                        q[i[j], f] = yi[f] + step * (e * xu[f] - reg * yi[f])
        err = r - mu - np.einsum("ij,ij->i", p[u], q[i])
        fp = np.delete(p, [keep_p], axis=1) if biases else p
        fq = np.delete(q, [keep_q], axis=1) if biases else q
        history.append(err @ err + reg * (np.bincount(u) @ (fp * fp).sum(1) + counts_i @ (fq * fq).sum(1)))
        step = lr / (1.0 + decay * (epoch + 1))
    return p, q, history


@pytest.mark.parametrize("kernels, biases, blocks", [("numpy", True, 3), ("numpy", False, 1), ("auto", True, 5)])
def test_one_rank_equals_the_serial_reference_of_the_same_visiting_order(monkeypatch, kernels, biases, blocks):
    monkeypatch.setenv("MPIML_KERNELS", kernels)
    shard = synthetic_ratings(SPEC)
    model = NOMAD(rank=3, reg=0.05, lr=0.03, decay=0.2, iters=3, seed=4, biases=biases,
                  blocks_per_rank=blocks).fit(shard)
    p, q, history = serial_nomad(shard.users, shard.items, shard.values, 3, 0.05, 0.03, 0.2, 3, 4, blocks, biases)
    # numpy path: the same operations in the same order; compiled: the same up to rounding
    tolerance = dict(rtol=1e-13, atol=1e-15) if kernels == "numpy" else dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.user_factors_, p, **tolerance)
    np.testing.assert_allclose(model.item_factors_, q, **tolerance)
    np.testing.assert_allclose([h["objective"] for h in model.history_], history, rtol=1e-9)
    assert [h["visits"] for h in model.history_] == [blocks] * 3


@pytest.mark.parametrize("kernels", ["numpy", "auto"])
def test_a_sweep_in_pieces_is_the_whole_block_sweep(monkeypatch, kernels):
    monkeypatch.setenv("MPIML_KERNELS", kernels)
    monkeypatch.setattr(nomad, "PIECE", 7)
    rng = np.random.default_rng(0)
    block = dsgd.BlockRatings(rng.integers(0, 9, 50), rng.integers(0, 6, 50), rng.normal(size=50))
    x0, y0 = rng.normal(size=(9, 4)), rng.normal(size=(6, 4))
    x1, y1, x2, y2 = x0.copy(), y0.copy(), x0.copy(), y0.copy()
    pieces = []
    dsgd.sgd_block(block, x1, y1, 0.3, 0.05, 0.1, np.random.default_rng(3), 3, 2)
    nomad.sweep(block, x2, y2, 0.3, 0.05, 0.1, np.random.default_rng(3), (3, 2), pieces.append)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and len(pieces) == 8


def test_route_prefers_unvisited_ranks_with_the_shortest_queue_then_bounded_extra_visits():
    loads = np.array([0, 5, 1, 1, 9])
    route = nomad.route
    assert route(np.array([1, 0, 0, 0, 0]), loads, 0, 5, "least_loaded", 1) == 2   # tie 2/3: nearer after 0
    assert route(np.array([1, 0, 1, 0, 0]), loads, 2, 5, "least_loaded", 1) == 3
    assert route(np.array([1, 0, 1, 1, 1]), loads, 3, 5, "least_loaded", 0) == 1   # the only one left
    assert route(np.array([1, 1, 1, 1, 1]), loads, 0, 5, "least_loaded", 1) == 2   # all visited: an extra visit
    assert route(np.array([1, 1, 2, 2, 1]), loads, 0, 5, "least_loaded", 1) == 1   # 2 and 3 had theirs
    assert route(np.array([2, 2, 2, 2, 1]), loads, 4, 5, "least_loaded", 1) == -1  # none may: home
    assert route(np.ones(5), loads, 0, 5, "least_loaded", 0) == -1
    assert route(np.zeros(5), loads, 4, 5, "cyclic", 0) == 0
    assert route(np.ones(5), loads, 4, 5, "cyclic", 1) == 0 and route(np.ones(5), loads, 4, 5, "cyclic", 0) == -1
    assert route(np.ones(1), loads[:1], 0, 1, "least_loaded", 3) == -1
    assert route(np.ones(1), loads[:1], 0, 1, "cyclic", 3) == -1


def test_item_blocks_are_balanced_and_homed_in_rank_order():
    counts = np.random.default_rng(1).integers(1, 30, size=200)
    bounds, homes = nomad.item_blocks(counts, 3, 4)
    assert bounds[0] == 0 and bounds[-1] == 200 and np.all(np.diff(bounds) >= 0) and bounds.size == 13
    assert homes.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    totals = np.add.reduceat(counts, bounds[:-1])
    assert totals.max() <= counts.sum() / 12 + counts.max()


def test_take_prefers_the_oldest_block_not_yet_visited_here():
    blocks = [nomad.Block.new(b, 0, np.zeros((2, 3)), 3) for b in range(3)]
    blocks[0].visits[1] = 1.0
    assert nomad.take(blocks, 1) == 1 and nomad.take(blocks, 0) == 0
    for block in blocks:
        block.visits[2] = 1.0
    assert nomad.take(blocks, 2) == 0 and nomad.take(blocks, 2, extra=False) == -1


def test_partitioned_factors_are_refused_and_auto_stays_replicated():
    from mpiml.errors import ArgumentError

    shard = synthetic_ratings(SPEC)
    with pytest.raises(ArgumentError, match="nomad: factors='partitioned' is not available"):
        NOMAD(rank=2, iters=1, factors="partitioned").fit(shard)
    assert NOMAD(rank=2, iters=1, factors="auto").fit(shard).factors_layout_ == "replicated"
