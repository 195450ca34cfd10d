"""examples/recommend.py against numpy ALS and implicit ALS on the ratings file it wrote."""

from __future__ import annotations

import numpy as np
import pytest
from examples_helpers import lines, number, run_example

from mpiml.data.ratings import RatingsShard, split_fraction


def dense_ids(users, items):
    """Raw ids -> 0..n-1, sorted (as the model numbers them)."""
    user_ids, items_ids = np.unique(users), np.unique(items)
    return user_ids, items_ids, np.searchsorted(user_ids, users), np.searchsorted(items_ids, items)


def als_rmse(train, test, rank=8, reg=0.01, iters=10, seed=1):
    """ALS-WR with user and item biases, by normal equations per row (ridge weighted by row counts)."""
    user_ids, item_ids, u, i = dense_ids(train.users, train.items)
    mu = train.values.mean()
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 0.1, (len(user_ids), rank)), rng.normal(0, 0.1, (len(item_ids), rank))
    bu, bi = np.zeros(len(user_ids)), np.zeros(len(item_ids))

    def solve(rows, cols, other, other_bias, n_rows):
        factors, biases = np.zeros((n_rows, rank)), np.zeros(n_rows)
        order = np.argsort(rows, kind="stable")
        for r, mine in enumerate(np.split(order, np.cumsum(np.bincount(rows, minlength=n_rows))[:-1])):
            A = np.hstack([other[cols[mine]], np.ones((mine.size, 1))])
            target = train.values[mine] - mu - other_bias[cols[mine]]
            x = np.linalg.solve(A.T @ A + reg * mine.size * np.eye(rank + 1), A.T @ target)
            factors[r], biases[r] = x[:-1], x[-1]
        return factors, biases

    for _ in range(iters):
        P, bu = solve(u, i, Q, bi, len(user_ids))
        Q, bi = solve(i, u, P, bu, len(item_ids))
    tu, ti = np.searchsorted(user_ids, test.users), np.searchsorted(item_ids, test.items)
    known = (tu < len(user_ids)) & (user_ids[np.minimum(tu, len(user_ids) - 1)] == test.users) \
        & (ti < len(item_ids)) & (item_ids[np.minimum(ti, len(item_ids) - 1)] == test.items)
    tu, ti = tu[known], ti[known]
    pred = mu + bu[tu] + bi[ti] + np.einsum("ij,ij->i", P[tu], Q[ti])
    return float(np.sqrt(np.mean((pred - test.values[known]) ** 2)))


def implicit_als(train, rank=16, reg=5.0, alpha=0.5, iters=10, seed=1):
    """Hu, Koren & Volinsky on dense matrices: (Y'C_uY + reg I) x_u = Y'C_u p_u for every row."""
    user_ids, item_ids, u, i = dense_ids(train.users, train.items)
    C = np.zeros((len(user_ids), len(item_ids)))
    C[u, i] = alpha * np.abs(train.values)   # confidence minus one
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(0, 0.01, (len(user_ids), rank)), rng.normal(0, 0.01, (len(item_ids), rank))

    def half(C, other):
        gram = other.T @ other
        return np.stack([np.linalg.solve(gram + (other.T * c) @ other + reg * np.eye(rank), other.T @ ((1 + c) * (c > 0)))
                         for c in C])

    for _ in range(iters):
        X = half(C, Y)
        Y = half(C.T, X)
    return user_ids, item_ids, X, Y, C > 0


def ranking(user_ids, item_ids, X, Y, seen, test, k=10):
    """precision@k and nDCG@k over test users, training items excluded."""
    precision, ndcg, n = 0.0, 0.0, 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, user in enumerate(user_ids):
        relevant = set(test.items[(test.users == user) & (test.values > 0)].tolist()) & set(item_ids.tolist())
        if not relevant:
            continue
        scores = Y @ X[row]
        scores[seen[row]] = -np.inf
        top = item_ids[np.argsort(-scores, kind="stable")[:k]]
        hits = np.array([item in relevant for item in top], dtype=float)
        precision += hits.sum() / k
        ndcg += hits @ discounts / discounts[:min(k, len(relevant))].sum()
        n += 1
    return precision / n, ndcg / n


@pytest.mark.parametrize("ranks", [2, 3])
def test_recommend_example(tmp_path, ranks):
    out = run_example("recommend.py", ranks, "--dir", tmp_path).stdout
    data = np.loadtxt(tmp_path / "ratings.csv", delimiter=",")
    shard = RatingsShard.from_arrays(data[:, 0], data[:, 1], data[:, 2], keys=np.arange(1, len(data) + 1))
    train, test = split_fraction(shard, 0.1, seed=0)  # the keys are line numbers, as read_ratings gives

    rmse = number(out, "als test rmse")
    assert rmse == pytest.approx(als_rmse(train, test), abs=0.01)
    assert rmse < 0.5 * np.std(test.values)  # far better than predicting the mean

    user_ids, item_ids, X, Y, seen = implicit_als(train)
    precision, ndcg = ranking(user_ids, item_ids, X, Y, seen, test)
    [metrics] = lines(out, "ials precision@10")
    assert float(metrics.split()[0]) == pytest.approx(precision, abs=0.015)
    assert float(metrics.split()[2]) == pytest.approx(ndcg, abs=0.015)

    # The saved model (after fold_in): its top-10s and the new user's factors, recomputed here.
    model = np.load(tmp_path / "model.npz", allow_pickle=False)
    P, Q, ids, items = model["P"], model["Q"], model["user_ids"], model["item_ids"]
    for user in ids[:3]:
        row = int(np.searchsorted(ids, user))
        scores = Q @ P[row]
        scores[np.isin(items, train.items[train.users == user])] = -np.inf
        assert lines(out, f"top-10 for user {user}:") == [" ".join(map(str, items[np.argsort(-scores)[:10]]))]
    new_items, strengths = np.array([1, 2, 3, 5, 8, 13, 21]), np.array([5.0, 4.0, 4.0, 3.0, 5.0, 2.0, 4.0])
    q = Q[np.searchsorted(items, new_items)]
    c = 0.5 * strengths
    x = np.linalg.solve(Q.T @ Q + (q.T * c) @ q + 5.0 * np.eye(16), q.T @ (1 + c))
    np.testing.assert_allclose(P[np.searchsorted(ids, 100_000)], x, rtol=1e-8, atol=1e-10)
    scores = Q @ x
    scores[np.isin(items, new_items)] = -np.inf
    assert lines(out, "top-10 for new user 100000:") == [" ".join(map(str, items[np.argsort(-scores)[:10]]))]
    assert lines(out, f"reloaded on {ranks - 1} ranks: same top-10") == ["yes"]
