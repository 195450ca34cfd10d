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
    # (layout, integer factors, routes, evaluate's (cold_start, reproducible) cases): few collectives, each
    # layout, route, policy and mode once; integer factors make ranking ties real
    plan = [(0, False, ("auto", "users", "items"), [("drop", False), ("drop", True)]),
            (2, True, ("auto",), [("mean", True)])]   # "nan" differs from "drop" only in the cold mask
    for layout, integer, routes, evaluations in plan:
        world = make_world(1 + integer, integer=integer)
        model = replicated(world)
        shard = test_shard(world, comm)
        u, i = lookup(world["user_ids"], shard.users), lookup(world["item_ids"], shard.items)
        pf = share(world, comm, *layouts(world, comm)[layout])
        full = serving.gather_full(pf, comm)
        agree(comm, all(np.array_equal(full[key], world[key]) for key in full), "gather_full")
        for route in routes:
            got = serving.predict_pairs(pf, u, i, comm=comm, route=route)
            want = model.predict(shard.users, shard.items, cold_start="nan")
            agree(comm, np.array_equal(got, want, equal_nan=True), (route, got - want))
        for policy, exact in evaluations:
            model.cold_start, model.reproducible = policy, exact
            want = model.evaluate(shard, comm=comm, k=4, ranking=True)
            got = serving.evaluate(pf, shard.users, shard.items, shard.values, comm=comm, k=4, ranking=True,
                                   cold_start=policy, reproducible=exact)
            same = got.keys() == want.keys() and all(np.array_equal(got[key], want[key], equal_nan=True)
                                                     for key in want)
            agree(comm, same, (policy, exact, got, want))


def oracle_top_k(world, user, k, exclude, offset):
    """numpy on the full score row: the items and scores every path must give."""
    scores = offset + world["Q"] @ world["P"][user]
    if exclude:
        scores[world["rated_indices"][world["rated_indptr"][user]:world["rated_indptr"][user + 1]]] = -np.inf
    best = top_k_reference(scores[None, :], k)[0]
    return best, scores[best]


def check_recommend(comm):
    # (integer factors, layout, k, exclude_rated): ties on every layout, k = 1 and k > items once
    plan = [(True, 0, 4, True), (True, 1, 1, True), (True, 2, 30, False), (False, 0, 4, True)]
    for integer, layout, k, exclude in plan:
        world = make_world(3 + integer, integer=integer)
        model = replicated(world)
        nu = world["user_ids"].size
        rng = np.random.default_rng([5, comm.rank])
        asked = rng.choice(nu, 0 if comm.rank == comm.size - 1 else 6)   # repeats allowed; the last rank asks none
        asked[:1] = 0   # user 0 rated nearly every item: fewer than k are left
        pf = share(world, comm, *layouts(world, comm)[layout])
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

    for biases, layout in ((True, 0), (True, 1), (False, 2)):
        world = make_world(6, biases=biases)
        model = replicated(world)
        lay = Layout(world["rank"], biases)
        implicit = replicated(world, ImplicitALS, reg=0.3, alpha=2.0, dtype="float64")
        rng = np.random.default_rng([8, comm.rank])
        n = 0 if comm.rank == 0 else 7   # rank 0 folds in a user with no ratings
        items = rng.choice(world["item_ids"], n)    # repeated items are kept, as in FactorModel
        items[:1] = 99_997                          # unknown: ignored
        ratings = rng.integers(1, 6, n).astype(float)
        pf = share(world, comm, *layouts(world, comm)[layout])
        got = serving.fold_in(pf, items, ratings, serving.als_solver(world["mu"], 0.1, lay), comm=comm)
        want = model.fold_in(items, ratings)
        agree(comm, np.array_equal(got, want), (got, want))
        agree(comm, np.array_equal(got, serving.fold_in(pf, items, ratings, serving.solver_for(model, pf, comm),
                                                        comm=comm)))
        gram = serving.item_gram(pf, comm=comm)
        got = serving.fold_in(pf, items, ratings, serving.ials_solver(gram, 0.3, 2.0), comm=comm)
        agree(comm, np.array_equal(got, serving.fold_in(pf, items, ratings, serving.solver_for(implicit, pf, comm),
                                                        comm=comm)))
        want = implicit.fold_in(items, ratings)
        agree(comm, np.allclose(got, want, rtol=1e-10, atol=1e-12), (got, want))


def _same(a, b) -> bool:
    fields = ("user_bounds", "item_bounds", "user_block", "item_block", "user_ids", "item_ids", "rated_indptr",
              "rated_indices", "rank", "size")
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields) and a.mu == b.mu and \
        a.user_block.dtype == b.user_block.dtype


def _raises(call, kind, *words):
    """What ``call()`` raised (None if it did not raise ``kind`` with all ``words`` in its message)."""
    try:
        call()
    except kind as exc:
        return str(exc) if all(w in str(exc) for w in words) else None
    return None


def check_block_store(comm, root):
    """Save at p, load at p (same and new bounds) and at other counts; full load; damaged saves refused."""
    from mpi_helpers import sub_comm

    from mpiml.errors import DataError
    from mpiml.mf import block_store
    from mpiml.mf.estimator import FactorModel

    world = make_world(9)
    model = replicated(world)
    config = {"format": 1, "algorithm": "als", "params": model._model_params(vars(model._params)), "reg_": 0.1}
    path = root / "model"
    pf = share(world, comm, *layouts(world, comm)[0])
    block_store.save_blocks(path, pf, config, comm=comm)
    ok = _same(block_store.load_blocks(path, comm, pf.user_bounds, pf.item_bounds), pf)
    nu, ni = world["user_ids"].size, world["item_ids"].size
    for size in sorted({1, max(comm.size - 1, 1)}):   # at p itself: the reload after the second save below
        with sub_comm(size) as sub:
            if sub is not None:
                got = block_store.load_blocks(path, sub)
                ok &= _same(got, share(world, sub, partition.contiguous(nu, size), partition.contiguous(ni, size)))
                ok &= block_store.read_manifest(path, sub)["config"] == config
    agree(comm, ok, "blocks loaded at another rank count differ from the full arrays' slices")
    full = block_store.load_full(path, comm)
    agree(comm, all(np.array_equal(full[key], world[key]) for key in
                    ("P", "Q", "user_ids", "item_ids", "rated_indptr", "rated_indices")) and full["mu"] == world["mu"])
    out = comm.bcast(str(root / "replicated.npz"))
    block_store.to_model_file(path, out, comm)
    loaded = FactorModel.load(out, comm)
    pairs = world["user_ids"][:5], world["item_ids"][:5]
    agree(comm, np.array_equal(loaded.predict(*pairs), model.predict(*pairs)) and loaded.reg_ == 0.1)

    # saved again at p - 1 ranks over it: the extra block file goes, the new save reads back
    with sub_comm(max(comm.size - 1, 1)) as sub:
        if sub is not None:
            bounds = partition.contiguous(nu, sub.size), partition.contiguous(ni, sub.size)
            block_store.save_blocks(path, share(world, sub, *bounds), config, comm=sub)
    comm.Barrier()
    files = sorted(p.name for p in path.glob("block-*.npz"))
    agree(comm, files == [block_store.block_name(r) for r in range(max(comm.size - 1, 1))], files)
    agree(comm, _same(block_store.load_blocks(path, comm), share(world, comm, partition.contiguous(nu, comm.size),
                                                                 partition.contiguous(ni, comm.size))))

    # a damaged block: every rank raises the reader's DataError naming the file
    block_store.save_blocks(path, pf, config, comm=comm)
    victim = path / block_store.block_name(comm.size - 1)
    if comm.rank == 0:
        victim.write_bytes(victim.read_bytes()[:100])
    comm.Barrier()
    agree(comm, _raises(lambda: block_store.load_blocks(path, comm), DataError, victim.name, "corrupt"))
    if comm.rank == 0:
        victim.unlink()
    comm.Barrier()
    agree(comm, _raises(lambda: block_store.load_full(path, comm), DataError, victim.name, "missing"))

    # a save that fails on one rank leaves no manifest: never read as complete
    real = block_store._write

    def failing(where, data):
        if where.name.startswith("block") and comm.rank == comm.size - 1:
            raise OSError(28, "No space left on device")
        return real(where, data)

    block_store._write = failing
    try:
        agree(comm, _raises(lambda: block_store.save_blocks(path, pf, config, comm=comm), DataError, "No space"))
    finally:
        block_store._write = real
    agree(comm, _raises(lambda: block_store.load_blocks(path, comm), DataError, "no manifest"))


def check_add_users(comm):
    """New users folded in on several ranks at once, added, then recommended: as FactorModel.fold_in(user=...)."""
    from mpiml.mf.als import Layout

    world = make_world(11)
    uids = world["user_ids"]
    gaps = np.setdiff1d(np.arange(uids[0] + 1, uids[-1]), uids)
    pool = np.random.default_rng(11).permutation(gaps)[:2 * comm.size]
    mine = [] if comm.rank == 1 else list(pool[2 * comm.rank:2 * comm.rank + 2])
    if comm.rank == 0:
        mine.append(uids[0] - 1)                   # before every user
    if comm.rank == comm.size - 1:
        mine.append(uids[-1] + 1)                  # after every user
    rng = np.random.default_rng([12, comm.rank])
    asks = [(rng.choice(world["item_ids"], 5), rng.integers(1, 6, 5).astype(float)) for _ in mine]
    everyone = [(u, a) for part in comm.allgather(list(zip(mine, asks))) for u, a in part]
    solve = serving.als_solver(world["mu"], 0.1, Layout(world["rank"], True))
    for layout in (0, 1):
        pf = share(world, comm, *layouts(world, comm)[layout])
        rows = [serving.fold_in(pf, items, ratings, solve, comm=comm) for items, ratings in asks]
        rows += [serving.fold_in(pf, [], [], solve, comm=comm) for _ in range(4 - len(asks))]  # same call count
        added = serving.add_users(pf, mine, np.array(rows[:len(asks)]).reshape(len(asks), pf.width),
                                  [items for items, _ in asks], comm=comm)
        grown = replicated(world)
        for user, (items, ratings) in everyone:
            grown.fold_in(items, ratings, user=user)
        want = share(dict(P=grown.user_factors_, Q=grown.item_factors_, mu=world["mu"], user_ids=grown.user_ids_,
                          item_ids=grown.item_ids_, rated_indptr=grown.rated_indptr_,
                          rated_indices=grown.rated_indices_), comm, added.user_bounds, added.item_bounds)
        (lo, hi), (new_lo, new_hi) = pf.user_range, added.user_range
        stays = np.isin(pf.user_ids[lo:hi], added.user_ids[new_lo:new_hi]).all()
        agree(comm, _same(added, want) and stays, (layout, added.user_bounds))
        got = serving.recommend_batch(added, mine, 4, comm=comm)
        agree(comm, all(np.array_equal(g[0], grown.recommend(u, 4)[0]) for u, g in zip(mine, got)))
    raised = _raises(lambda: serving.add_users(pf, uids[:1] if comm.rank == 0 else [], np.zeros((int(comm.rank == 0),
                                               pf.width)), comm=comm), ArgumentError, "already in the model")
    agree(comm, raised)
