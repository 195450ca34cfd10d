"""Distributed factorization at p ranks against serial dense references (run at p = 1..5)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from mf_reference import als_reference, dense, ials_reference, ranking_reference
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data.ratings import RatingsShard, split_fraction
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.errors import ArgumentError, CheckpointError, DataError, DivergenceError
from mpiml.mf import ALS, DSGD, ImplicitALS
from mpiml.mf.als import Layout, initial_factors

SMALL = SyntheticSpec(users=40, items=25, ratings=500, rank=3, noise=0.1, seed=2)



def shard_of(spec, comm):
    return synthetic_ratings(spec, comm.rank, comm.size)


def gathered(comm, shard):
    parts = comm.allgather((shard.users, shard.items, shard.values))
    return [np.concatenate([p[j] for p in parts]) for j in range(3)]


def shared_dir(comm):
    return comm.bcast(tempfile.mkdtemp(prefix="mpiml-mf-") if comm.rank == 0 else None, root=0)


@pytest.mark.mpi
@pytest.mark.parametrize("biases", [False, True])
def test_distributed_als_equals_serial_als_from_the_same_start(biases):
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    model = ALS(rank=3, reg=0.05, iters=3, biases=biases, seed=7).fit(shard, comm=comm)
    users, items, values = gathered(comm, shard)
    uid, iid = np.unique(users), np.unique(items)
    r, m = dense(np.searchsorted(uid, users), np.searchsorted(iid, items), values, uid.size, iid.size)
    p0, q0 = initial_factors(7, uid.size, iid.size, Layout(3, biases))
    p, q, objectives = als_reference(r, m, p0, q0, 0.05, 3, mu=values.mean(), biases=biases)
    agree(comm, np.allclose(model.user_factors_, p, rtol=1e-7, atol=1e-9), np.abs(model.user_factors_ - p).max())
    agree(comm, np.allclose(model.item_factors_, q, rtol=1e-7, atol=1e-9), np.abs(model.item_factors_ - q).max())
    got = [h["objective"] for h in model.history_]
    agree(comm, np.allclose(got, objectives, rtol=1e-9), (got, objectives))


@pytest.mark.mpi
def test_als_objective_never_increases():
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=120, items=60, ratings=2500, rank=4, noise=0.3, seed=3)
    model = ALS(rank=6, reg=0.02, iters=8, biases=True, seed=1).fit(shard_of(spec, comm), comm=comm)
    objectives = np.array([h["objective"] for h in model.history_])
    agree(comm, np.all(np.diff(objectives) <= 1e-10 * objectives[:-1]), objectives)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["als", "dsgd"])
def test_recovers_held_out_ratings_near_the_noise_floor(algorithm):
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=300, items=150, ratings=12000, rank=3, noise=0.1, seed=4)
    train, test = split_fraction(shard_of(spec, comm), 0.1, seed=1)
    if algorithm == "als":
        model = ALS(rank=3, reg=0.01, iters=10)
    else:
        model = DSGD(rank=3, reg=0.01, iters=30, lr=0.05)
    result = model.fit(train, comm=comm).evaluate(test, comm=comm)
    # The best possible RMSE is the noise (0.1); predicting the mean scores about 1.0.
    agree(comm, result["rmse"] < 1.35 * spec.noise, result)
    agree(comm, result["count"] + result["cold_start_dropped"] == comm.allreduce(len(test)), result)


@pytest.mark.mpi
@pytest.mark.parametrize("solver, dtype, tolerance", [("cholesky", "float64", 1e-8), ("cg", "float64", 2e-3),
                                                      ("cholesky", "float32", 1e-4)])
def test_implicit_als_matches_the_dense_reference(solver, dtype, tolerance):
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    shard.values = np.rint(np.abs(shard.values))  # interaction counts
    model = ImplicitALS(rank=3, reg=0.1, alpha=2.0, iters=2, solver=solver, cg_steps=6, seed=5,
                         dtype=dtype).fit(shard, comm=comm)
    users, items, values = gathered(comm, shard)
    uid, iid = np.unique(users), np.unique(items)
    r, m = dense(np.searchsorted(uid, users), np.searchsorted(iid, items), values, uid.size, iid.size)
    p0, q0 = initial_factors(5, uid.size, iid.size, Layout(3))
    p, q, objective = ials_reference(r, m, p0, q0, 0.1, 2.0, 2)
    scale = np.abs(p).max() + np.abs(q).max()
    worst = max(np.abs(model.user_factors_ - p).max(), np.abs(model.item_factors_ - q).max()) / scale
    agree(comm, worst < tolerance, worst)
    agree(comm, np.isclose(model.history_[-1]["objective"], objective, rtol=10 * tolerance),
          (model.history_[-1]["objective"], objective))


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["als", "dsgd"])
def test_resume_from_checkpoint_continues_the_same_run(algorithm):
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    make = (lambda **kw: ALS(rank=3, reg=0.05, **kw)) if algorithm == "als" else \
        (lambda **kw: DSGD(rank=3, reg=0.05, lr=0.05, **kw))
    straight = make(iters=4).fit(shard, comm=comm)
    directory = shared_dir(comm)
    make(iters=2, checkpoint_dir=directory).fit(shard, comm=comm)
    resumed = make(iters=4, checkpoint_dir=directory, resume=True).fit(shard, comm=comm)
    agree(comm, len(resumed.history_) == 4, resumed.history_)
    agree(comm, np.allclose(resumed.user_factors_, straight.user_factors_, rtol=1e-12, atol=1e-14) and
          np.allclose(resumed.item_factors_, straight.item_factors_, rtol=1e-12, atol=1e-14))


@pytest.mark.mpi
def test_ranking_metrics_in_parallel_equal_a_serial_count():
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=80, items=40, ratings=1500, rank=3, noise=0.1, seed=6)
    train, test = split_fraction(shard_of(spec, comm), 0.25, seed=2)
    model = ImplicitALS(rank=3, reg=0.1, alpha=1.0, iters=2).fit(train, comm=comm)
    got = model.evaluate(test, comm=comm, k=5)
    users, items, values = gathered(comm, test)
    per_user = {}
    for u, i, v in zip(users.tolist(), items.tolist(), values.tolist()):
        if v > 0 and u in set(model.user_ids_.tolist()) and i in set(model.item_ids_.tolist()):
            per_user.setdefault(u, set()).add(i)
    rows = []
    for u, liked in per_user.items():
        recs, _ = model.recommend(u, k=5)
        rows.append(ranking_reference(recs.tolist(), liked, 5))
    expected = np.mean(rows, axis=0)
    have = [got["precision_at_5"], got["recall_at_5"], got["ndcg_at_5"], got["map_at_5"]]
    agree(comm, np.allclose(have, expected, rtol=1e-10) and got["ranked_users"] == len(rows), (have, expected))


@pytest.mark.mpi
def test_divergence_stops_every_rank_with_a_clear_message():
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    try:
        DSGD(rank=3, reg=0.0, iters=5, lr=1e6, step="decay").fit(shard, comm=comm)
        message = None
    except DivergenceError as exc:
        message = str(exc)
    agree(comm, message is not None and ("non-finite" in message or "objective became" in message), message)
    agree(comm, len(set(comm.allgather(message))) == 1, message)


@pytest.mark.mpi
def test_a_rank_without_ratings_is_fine():
    comm = MPI.COMM_WORLD
    rows = [(1, 1, 4.0), (1, 2, 3.0), (2, 1, 5.0), (3, 2, 1.0)] if comm.rank == 0 else []
    shard = RatingsShard.from_arrays(*(np.array(c) for c in zip(*rows))) if rows else \
        RatingsShard.from_arrays([], [], [])
    model = ALS(rank=2, reg=0.1, iters=2).fit(shard, comm=comm)
    factors = model.user_factors_
    agree(comm, factors.shape == (3, 2 + 2) and np.all(np.isfinite(factors)), factors)  # [x, b_u, 1]


@pytest.mark.mpi
def test_resume_refuses_a_checkpoint_of_another_problem():
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    directory = shared_dir(comm)
    ALS(rank=3, iters=1, checkpoint_dir=directory).fit(shard, comm=comm)
    try:
        ALS(rank=4, iters=2, checkpoint_dir=directory, resume=True).fit(shard, comm=comm)
        message = None
    except CheckpointError as exc:
        message = str(exc)
    agree(comm, message is not None and "written with rank=3" in message and "this run has rank=4" in message
          and "iters" not in message, message)  # iters may change: train further


@pytest.mark.mpi
def test_no_ratings_anywhere_is_a_data_error_on_every_rank():
    comm = MPI.COMM_WORLD
    try:
        ALS(rank=2).fit(RatingsShard.from_arrays([], [], []), comm=comm)
        message = None
    except DataError as exc:
        message = str(exc)
    agree(comm, message is not None and "no training ratings" in message, message)


def _make(algorithm, **kw):
    return {"als": lambda: ALS(rank=4, reg=0.05, iters=3, **kw),
            "ials": lambda: ImplicitALS(rank=4, iters=2, alpha=1.0, **kw),
            "ials_cholesky": lambda: ImplicitALS(rank=4, iters=2, solver="cholesky", **kw),
            "dsgd": lambda: DSGD(rank=4, iters=3, **kw)}[algorithm]()


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["als", "ials", "dsgd"])
def test_timing_split_adds_up_on_every_rank(algorithm):
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=150, items=80, ratings=4000, rank=3, noise=0.1, seed=8)
    model = _make(algorithm).fit(shard_of(spec, comm), comm=comm)
    info = model.fit_info_
    per_rank = info["per_rank"]
    parts = ("compute_seconds", "comm_seconds", "wait_seconds")
    agree(comm, [r["rank"] for r in per_rank] == list(range(comm.size)), per_rank)
    agree(comm, per_rank[comm.rank] == {"rank": comm.rank, **{k: info[k] for k in per_rank[0] if k != "rank"}},
          (per_rank, info))
    agree(comm, all(info[k] >= 0 for k in parts) and sum(info[k] for k in parts) <= info["fit_seconds"] + 1e-6,
          info)
    agree(comm, info["fit_seconds"] + info["setup_seconds"] <= info["seconds"] + 1e-6, info)
    computes = [r["compute_seconds"] for r in per_rank]
    agree(comm, np.isclose(info["compute_imbalance"], max(computes) / np.mean(computes)), info)
    agree(comm, info["compute_imbalance"] >= 1.0 and info["estimated_imbalance"] >= 1.0, info)
    # Each iteration's own split adds up too, and the iterations' compute is part of the total.
    for record in model.history_:
        agree(comm, sum(record[k] for k in parts) <= record["seconds"] + 1e-6, record)
    agree(comm, sum(r["compute_seconds"] for r in model.history_) <= info["compute_seconds"] + 1e-9, info)
    agree(comm, len(set(comm.allgather(str(per_rank)))) == 1, per_rank)  # the same report everywhere


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["als", "ials", "ials_cholesky", "dsgd"])
def test_blocks_balance_the_estimated_row_cost(algorithm):
    from mpiml.mf.estimator import cost_model
    from mpiml.mf.partition import balanced_blocks, row_costs

    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=300, items=120, ratings=6000, rank=3, noise=0.1, skew=1.2, seed=9)
    shard = shard_of(spec, comm)
    model = _make(algorithm, seed=1).fit(shard, comm=comm)
    users, items, _ = gathered(comm, shard)
    user_counts = np.unique(users, return_counts=True)[1]
    item_counts = np.unique(items, return_counts=True)[1]
    if algorithm == "dsgd":  # the same work per rating: blocks balance rating counts
        expected = balanced_blocks(user_counts, comm.size), balanced_blocks(item_counts, comm.size)
    else:
        solver = "cholesky" if algorithm != "ials" else "cg"
        free = 5 if algorithm == "als" else 4  # ALS with biases solves [x, b_u] and [y, c_i]
        costs = cost_model("als" if algorithm == "als" else "ials_" + solver)
        expected = tuple(balanced_blocks(row_costs(c, free, solver, 3, costs), comm.size)
                         for c in (user_counts, item_counts))
    agree(comm, model.blocks_ == {"users": expected[0].tolist(), "items": expected[1].tolist()},
          (model.blocks_, expected))


@pytest.mark.mpi
def test_reg_auto_picks_what_a_serial_brute_force_grid_picks():
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=120, items=60, ratings=2400, rank=3, noise=0.5, seed=10)
    shard = shard_of(spec, comm)
    grid = [0.01, 0.1, 1.0]  # 10x apart: a clear winner, whether warm-started or fitted afresh
    model = ALS(rank=6, reg="auto", reg_grid=grid, iters=8, auto_iters=8, seed=2).fit(shard, comm=comm)
    chosen = model.fit_info_["reg"]
    # Serial brute force on the whole data set: a fresh model per reg, fitted on the same slice.
    users, items, values = gathered(comm, shard)
    keys = np.concatenate(comm.allgather(shard.keys))
    whole = RatingsShard.from_arrays(users, items, values, keys)
    part, held = model.auto_split(whole)
    errors = []
    for reg in grid:
        m = ALS(rank=6, reg=reg, iters=8, seed=2)
        m.fit(part, comm=MPI.COMM_SELF)
        pred = m.predict(held.users, held.items, cold_start="mean")
        errors.append(np.sqrt(np.mean((pred - held.values) ** 2)))
    agree(comm, chosen == grid[int(np.argmin(errors))], (chosen, errors, model.fit_info_["reg_search"]))
    search = model.fit_info_["reg_search"]
    agree(comm, [t["reg"] for t in search] == sorted(grid), search)
    agree(comm, np.allclose([t["holdout_rmse"] for t in search], errors, rtol=0.03), (search, errors))
    agree(comm, len(model.history_) == 8 and np.isfinite(model.user_factors_).all(), model.history_)


@pytest.mark.mpi
def test_dsgd_biases_learn_user_and_item_offsets():
    comm = MPI.COMM_WORLD
    spec = SyntheticSpec(users=300, items=150, ratings=15000, rank=3, noise=0.1, seed=11)
    shard = shard_of(spec, comm)
    offsets = np.random.default_rng(0)  # ratings = low rank + user bias + item bias + noise
    user_bias, item_bias = offsets.normal(0, 0.7, spec.users), offsets.normal(0, 0.7, spec.items)
    shard.values = shard.values + user_bias[shard.users] + item_bias[shard.items]
    train, test = split_fraction(shard, 0.1, seed=1)
    rmse = {}
    for biases in (True, False):
        model = DSGD(rank=3, reg=0.01, iters=25, lr=0.05, biases=biases, init_std=0.1, seed=3).fit(train, comm=comm)
        rmse[biases] = model.evaluate(test, comm=comm)["rmse"]
        objectives = [h["objective"] for h in model.history_]
        agree(comm, objectives[-1] < 0.3 * objectives[0], objectives)
    agree(comm, rmse[True] < 1.5 * spec.noise and rmse[True] < 0.6 * rmse[False], rmse)
    # The learned bias columns follow the true offsets (up to a shift absorbed by the mean).
    biased = DSGD(rank=3, reg=0.01, iters=25, lr=0.05, init_std=0.1, seed=3).fit(train, comm=comm)
    learned = biased.user_factors_[:, 3]  # rows are [x (rank 3), b_u, 1]
    truth = user_bias[biased.user_ids_]
    agree(comm, np.corrcoef(learned, truth)[0, 1] > 0.9, np.corrcoef(learned, truth))


@pytest.mark.mpi
def test_resume_keeps_the_reg_that_auto_chose_before_the_checkpoint():
    comm = MPI.COMM_WORLD
    shard = shard_of(SMALL, comm)
    directory = shared_dir(comm)
    first = ALS(rank=3, reg="auto", reg_grid=[0.01, 0.3], iters=2, checkpoint_dir=directory).fit(shard, comm=comm)
    resumed = ALS(rank=3, reg="auto", reg_grid=[0.01, 0.3], iters=4, checkpoint_dir=directory,
                  resume=True).fit(shard, comm=comm)
    agree(comm, resumed.reg_ == first.reg_ and "reg_search" not in resumed.fit_info_, resumed.fit_info_)
    agree(comm, len(resumed.history_) == 4, resumed.history_)


@pytest.mark.mpi
def test_an_invalid_parameter_is_refused_by_fit_on_every_rank():
    comm = MPI.COMM_WORLD
    model = ALS(rank=0)  # stored unchanged: checked by fit, before any communication of data
    try:
        model.fit(shard_of(SMALL, comm), comm=comm)
        message = collective = None
    except ArgumentError as exc:
        message, collective = str(exc), exc.collective
    agree(comm, message is not None and "als: rank must be an integer >= 1, got 0" in message and collective,
          message)
    agree(comm, len(set(comm.allgather(message))) == 1, message)
