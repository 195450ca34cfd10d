"""FactorModel on partitioned factors against a replicated fit of the same data (serial and MPI tests).

Oracle: ``ALS(factors="replicated")`` fitted on the same shards at the same rank count (the
same factors as the partitioned fit, see tests/mf/partitioned_cases.py), asked locally on
every rank; the partitioned model answers through :mod:`mpiml.mf.serving` collectively.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from partitioned_cases import ratings

from mpiml.errors import ArgumentError
from mpiml.mf import ALS, FactorModel
from mpiml.mf.serving import gather_full

SPEC = (60, 30, 600, 3)            # users, items, ratings, seed (the last of several ranks holds none)
PARAMS = dict(rank=3, reg=0.05, iters=2, biases=True, seed=7)
RTOL = 1e-9


def close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=1e-12, equal_nan=True))


def same_lists(got, want) -> bool:
    """Recommendation lists: the same items in the same order, scores to ``RTOL``."""
    return len(got) == len(want) and all(np.array_equal(g[0], w[0]) and close(g[1], w[1])
                                         for g, w in zip(got, want))


def same_dict(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(close(got[k], want[k]) for k in want)


def errors_alike(call, comm) -> bool:
    """``call()`` raises ArgumentError on every rank of ``comm``."""
    try:
        call()
    except ArgumentError:
        return all(comm.allgather(True))
    return all(comm.allgather(False))


def fitted(comm):
    """``(replicated, partitioned)`` ALS fitted on the same shards of ``comm``, and the test shard."""
    data = ratings(comm, *SPEC)
    test = ratings(comm, 60, 30, 300, 9)   # other pairs: some users and items unseen in training
    rep = ALS(factors="replicated", **PARAMS).fit(data, comm=comm)
    par = ALS(factors="partitioned", **PARAMS).fit(data, comm=comm)
    return rep, par, test


def serving_problems(comm) -> list:
    """Every way the partitioned model's answers differ from the replicated one's (empty: none)."""
    rep, par, test = fitted(comm)
    bad = []
    full = gather_full(_blocks(par, comm), comm)
    if not (close(full["P"], rep.user_factors_) and close(full["Q"], rep.item_factors_)):
        bad.append("factors")
    if par.factors_layout_ != "partitioned" or hasattr(par, "user_factors_"):
        bad.append("layout")
    for ranking in (False, True):
        if not same_dict(par.evaluate(test, comm, k=5, ranking=ranking), rep.evaluate(test, comm, k=5,
                                                                                     ranking=ranking)):
            bad.append(("evaluate", ranking))
    # predict: this rank's test pairs (unseen ones included), under two cold-start policies
    for policy in (None, "mean"):
        if not close(par.predict(test.users, test.items, policy, comm=comm), rep.predict(test.users, test.items,
                                                                                         policy)):
            bad.append(("predict", policy))
    # recommend: each rank its own users (the last rank none), with and without exclusion
    users = rep.user_ids_[comm.rank::comm.size + 1]
    for exclude in (True, False):
        if not same_lists(par.recommend_batch(users, 4, exclude, comm=comm),
                          rep.recommend_batch(users, 4, exclude)):
            bad.append(("recommend_batch", exclude))
    one = rep.user_ids_[(7 * comm.rank) % rep.user_ids_.size]
    if not same_lists([par.recommend(one, 6, comm=comm)], [rep.recommend(one, 6)]):
        bad.append("recommend")
    # an unknown user asked on one rank only: an error on every rank
    if not errors_alike(lambda: par.recommend_batch([10 ** 6] if comm.rank == 0 else [], comm=comm), comm):
        bad.append("unknown user")
    # asked on a communicator of another size than the blocks': an error, not a hang
    if comm.size > 1 and not errors_alike(lambda: par.predict(test.users, test.items, comm=MPI.COMM_SELF), comm):
        bad.append("other communicator")
    # fold_in: ranks of even number add a user, the others none; the oracle adds them all in turn
    items, values = np.array([0, 2, 5, 10 ** 6]), np.array([4.0, 2.0, 5.0, 3.0])
    new = [1000 + r for r in range(0, comm.size, 2)]
    mine = 1000 + comm.rank if comm.rank % 2 == 0 else None
    row = par.fold_in(items if mine else [], values if mine else [], mine, comm=comm)
    for user in new:
        want = rep.fold_in(items, values, user=user)
        if user == mine and not close(row, want):
            bad.append(("fold_in", user))
    if not (np.array_equal(par.user_ids_, rep.user_ids_) and same_lists(
            par.recommend_batch([mine] if mine else [], 5, comm=comm), rep.recommend_batch([mine] if mine else [], 5))):
        bad.append("recommend after fold_in")
    if not same_dict(par.evaluate(test, comm, k=5, ranking=True), rep.evaluate(test, comm, k=5, ranking=True)):
        bad.append("evaluate after fold_in")
    return bad


def _blocks(model, comm):
    from mpiml.mf.serving import from_model

    return from_model(model, comm)


def store_problems(comm, directory, load_comms) -> list:
    """Save the partitioned model at ``comm``'s size, load it on each of ``load_comms`` (None: not a member)
    and compare with the replicated oracle, asked locally."""
    rep, par, _ = fitted(comm)
    par.save(directory, comm=comm)
    saved = gather_full(_blocks(par, comm), comm)
    bad = []
    for sub in load_comms:
        if sub is None:
            continue
        loaded = FactorModel.load(directory, comm=sub)
        full = gather_full(_blocks(loaded, sub), sub)
        if not (type(loaded) is ALS and loaded.factors_layout_ == "partitioned" and loaded.reg_ == rep.reg_
                and loaded.get_params() == ALS(**PARAMS).get_params()
                and np.array_equal(full["P"], saved["P"]) and np.array_equal(full["Q"], saved["Q"])
                and np.array_equal(full["rated_indices"], rep.rated_indices_)
                and np.array_equal(loaded.user_ids_, rep.user_ids_)):
            bad.append(("load", sub.size, "arrays"))
        users = rep.user_ids_[sub.rank::sub.size]
        if not same_lists(loaded.recommend_batch(users, 4, comm=sub), rep.recommend_batch(users, 4)):
            bad.append(("load", sub.size, "recommend"))
        u = rep.user_ids_[sub.rank::3]
        i = rep.item_ids_[(np.arange(u.size) * 7) % rep.item_ids_.size]
        if not close(loaded.predict(u, i, comm=sub), rep.predict(u, i)):
            bad.append(("load", sub.size, "predict"))
    return bad

