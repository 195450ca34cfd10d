"""Checks of mpiml.mf.serving on a communicator, against replicated oracles (numpy, FactorModel).

Shared by the MPI tests (COMM_WORLD at p = 2, 3, 5) and the serial test (COMM_SELF, p = 1).
Every rank builds the same seeded full factors, takes its block, and compares what the
partitioned functions answer with what a FactorModel holding the full factors answers.
"""

from __future__ import annotations

import numpy as np
from mpi_helpers import agree

from mpiml.data.ratings import RatingsShard, lookup
from mpiml.errors import ArgumentError
from mpiml.mf import ALS, ImplicitALS, serving
from mpiml.mf.metrics import top_k_reference
from mpiml.runtime import partition


def make_world(seed, nu=37, ni=23, rank=3, biases=True, integer=False):
    """Full factors, ids, rated CSR and mean: the same on every rank (seeded)."""
    rng = np.random.default_rng(seed)
    width = rank + 2 if biases else rank
    if integer:  # every score exact in any summation order: ties are real ties
        P, Q, mu = rng.integers(-2, 3, (nu, width)).astype(float), rng.integers(-2, 3, (ni, width)).astype(float), 0.0
    else:
        P, Q, mu = rng.normal(size=(nu, width)), rng.normal(size=(ni, width)), 3.25
    if biases:
        P[:, rank + 1], Q[:, rank] = 1.0, 1.0
    rated = [np.sort(rng.choice(ni, int(rng.integers(0, ni if u % 7 == 0 else 8)), replace=False))
             for u in range(nu)]
    indptr = np.concatenate([[0], np.cumsum([r.size for r in rated])]).astype(np.int64)
    return dict(P=P, Q=Q, mu=mu, user_ids=np.sort(rng.choice(10_000, nu, replace=False)) + 1,
                item_ids=np.sort(rng.choice(10_000, ni, replace=False)) + 1, rated_indptr=indptr,
                rated_indices=np.concatenate(rated).astype(np.int64), rank=rank, biases=biases)


def bounds_with_empty(n, p, empty):
    """``p`` contiguous blocks of ``n`` rows, block ``empty`` holding none (when ``p > 1``)."""
    if p == 1:
        return np.array([0, n], dtype=np.int64)
    inner = partition.contiguous(n, p - 1)
    return np.insert(inner, empty, inner[empty])


def share(world, comm, ub, ib):
    return serving.PartitionedFactors.from_full(world["P"], world["Q"], world["mu"], world["user_ids"],
                                                world["item_ids"], world["rated_indptr"], world["rated_indices"],
                                                ub, ib, comm.rank)


def layouts(world, comm):
    """Block bounds to try: a rank with no users, a rank with no items, both on one rank."""
    p, nu, ni = comm.size, world["user_ids"].size, world["item_ids"].size
    return [(bounds_with_empty(nu, p, 0), bounds_with_empty(ni, p, p - 1)),
            (bounds_with_empty(nu, p, p - 1), bounds_with_empty(ni, p, p // 2)),
            (partition.contiguous(nu, p), bounds_with_empty(ni, p, 0))]


def replicated(world, cls=ALS, **params):
    """A FactorModel holding the full factors (the replicated oracle)."""
    model = cls(rank=world["rank"], biases=world["biases"], **params) if cls is ALS else cls(rank=world["P"].shape[1],
                                                                                            **params)
    model._check_params()
    model.user_factors_, model.item_factors_, model.global_mean_ = world["P"], world["Q"], world["mu"]
    model.user_ids_, model.item_ids_ = world["user_ids"], world["item_ids"]
    model.rated_indptr_, model.rated_indices_ = world["rated_indptr"], world["rated_indices"]
    model.reg_ = float(params.get("reg", 0.1))
    return model


def test_shard(world, comm, n=40, seed=0):
    """This rank's test ratings (raw ids, a few unknown users/items, some non-positive values)."""
    rng = np.random.default_rng([seed, comm.rank])
    if comm.rank == 1:
        n = 0   # a rank that asks nothing
    users, items = rng.choice(world["user_ids"], n), rng.choice(world["item_ids"], n)
    users[rng.random(n) < 0.1] = 99_999
    items[rng.random(n) < 0.1] = 99_998
    return RatingsShard.from_arrays(users, items, rng.integers(0, 6, n).astype(float))


def check_predict_and_evaluate(comm):
    for integer in (False, True):
        world = make_world(1 + integer, integer=integer)
        model = replicated(world)
        shard = test_shard(world, comm)
        u, i = lookup(world["user_ids"], shard.users), lookup(world["item_ids"], shard.items)
        for ub, ib in layouts(world, comm):
            pf = share(world, comm, ub, ib)
            for route in ("auto", "users", "items"):
                got = serving.predict_pairs(pf, u, i, comm=comm, route=route)
                want = model.predict(shard.users, shard.items, cold_start="nan")
                agree(comm, np.array_equal(got, want, equal_nan=True), (route, got - want))
            for policy in ("drop", "nan", "mean"):
                for exact in (False, True):
                    model.cold_start, model.reproducible = policy, exact
                    want = model.evaluate(shard, comm=comm, k=4, ranking=True)
                    got = serving.evaluate(pf, shard.users, shard.items, shard.values, comm=comm, k=4, ranking=True,
                                           cold_start=policy, reproducible=exact)
                    same = got.keys() == want.keys() and all(
                        np.array_equal(got[key], want[key], equal_nan=True) for key in want)
                    agree(comm, same, (policy, exact, got, want))


def oracle_top_k(world, user, k, exclude, offset):
    """numpy on the full score row: the items and scores every path must give."""
    scores = offset + world["Q"] @ world["P"][user]
    if exclude:
        scores[world["rated_indices"][world["rated_indptr"][user]:world["rated_indptr"][user + 1]]] = -np.inf
    best = top_k_reference(scores[None, :], k)[0]
    return best, scores[best]


def check_recommend(comm):
    for integer in (True, False):
        world = make_world(3 + integer, integer=integer)
        model = replicated(world)
        nu, ni = world["user_ids"].size, world["item_ids"].size
        rng = np.random.default_rng([5, comm.rank])
        asked = rng.choice(nu, 0 if comm.rank == comm.size - 1 else 6)   # repeats allowed; the last rank asks none
        asked[:1] = 0   # user 0 rated nearly every item: fewer than k are left
        for ub, ib in layouts(world, comm):
            pf = share(world, comm, ub, ib)
            for k in (1, 4, ni + 3):
                for exclude in (True, False):
                    got = serving.recommend_batch(pf, world["user_ids"][asked], k, exclude, comm=comm)
                    bad = []   # ranks ask different numbers of users: one verdict per call
                    for user, (items, scores) in zip(asked, got):
                        ids, values = model.recommend(world["user_ids"][user], k, exclude)
                        best, oracle = oracle_top_k(world, user, k, exclude, world["mu"])
                        finite = np.isfinite(oracle)
                        ok = np.array_equal(items, ids) and np.array_equal(items, world["item_ids"][best[finite]])
                        close = np.allclose(scores, values, rtol=1e-13, atol=0) and \
                            np.allclose(scores, oracle[finite], rtol=1e-13, atol=0)
                        exact = not integer or np.array_equal(scores, oracle[finite])
                        if not (ok and close and exact):
                            bad.append((user, k, exclude, items, ids, scores, values))
                    # the ranking's lists keep excluded items (scored -inf) when fewer than k others remain
                    best, scores = serving.top_k_users(pf, asked, k, exclude, comm=comm)
                    for row, user in enumerate(asked):
                        want, values = oracle_top_k(world, user, k, exclude, 0.0)
                        if not (np.array_equal(best[row], want) and np.allclose(scores[row], values, rtol=1e-13)):
                            bad.append((user, best[row], want))
                    agree(comm, not bad, bad)
        raised = None
        try:
            serving.recommend_batch(pf, [99_999] if comm.rank == 0 else [], comm=comm)
        except ArgumentError as exc:
            raised = str(exc)
        agree(comm, raised is not None and "unknown user 99999" in raised, raised)


def check_fold_in(comm):
    from mpiml.mf.als import Layout

    for biases in (True, False):
        world = make_world(6, biases=biases)
        model = replicated(world)
        lay = Layout(world["rank"], biases)
        implicit = replicated(world, ImplicitALS, reg=0.3, alpha=2.0, dtype="float64")
        rng = np.random.default_rng([8, comm.rank])
        n = 0 if comm.rank == 0 else 7   # rank 0 folds in a user with no ratings
        items = rng.choice(world["item_ids"], n)    # repeated items are kept, as in FactorModel
        items[:1] = 99_997                          # unknown: ignored
        ratings = rng.integers(1, 6, n).astype(float)
        for ub, ib in layouts(world, comm):
            pf = share(world, comm, ub, ib)
            got = serving.fold_in(pf, items, ratings, serving.als_solver(world["mu"], 0.1, lay), comm=comm)
            want = model.fold_in(items, ratings)
            agree(comm, np.array_equal(got, want), (got, want))
            gram = serving.item_gram(pf, comm=comm)
            got = serving.fold_in(pf, items, ratings, serving.ials_solver(gram, 0.3, 2.0), comm=comm)
            want = implicit.fold_in(items, ratings)
            agree(comm, np.allclose(got, want, rtol=1e-10, atol=1e-12), (got, want))
