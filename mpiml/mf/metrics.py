"""Rating-error and ranking metrics as sums, so ranks add them up with one allreduce (pure)."""

from __future__ import annotations

import numpy as np

RANKING = ("precision", "recall", "ndcg", "map")


def error_sums(pred, truth) -> np.ndarray:
    """``[sum squared error, sum absolute error, count]`` over finite predictions."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    err = pred - truth
    return np.array([err @ err, np.abs(err).sum(), err.size], dtype=np.float64)


def rmse_mae(sums) -> dict:
    """RMSE and MAE from (allreduced) :func:`error_sums`."""
    sse, sae, n = (float(v) for v in sums)
    if n == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "count": 0}
    return {"rmse": (sse / n) ** 0.5, "mae": sae / n, "count": int(n)}


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` best scores per row, best first (ties: lower index; NaN ranks as -inf).

    A strict total order on ``(-score, index)``, so the top ``k`` of a row equals the top ``k`` of the
    merged top ``k`` of any split of its columns (:mod:`mpiml.mf.serving` merges item blocks so).
    """
    scores = np.asarray(scores)
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    rows, n = scores.shape
    k = min(k, n)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition splits a tie at the k-th place arbitrarily: keep its lowest indices
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)[:, None]
        tied = scores == kth
        split = tied.sum(axis=1) > (np.take_along_axis(scores, part, axis=1) == kth).sum(axis=1)
        if split.any():
            above, tied = scores[split] > kth[split], tied[split]
            need = k - above.sum(axis=1, keepdims=True)
            keep = above | (tied & (np.cumsum(tied, axis=1) <= need))
            part[split] = np.nonzero(keep)[1].reshape(-1, k)
    else:
        part = np.tile(np.arange(n), (rows, 1))
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1)


def top_k_reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Reference of :func:`top_k`: a full sort of each row on ``(-score, index)``."""
    scores = np.asarray(scores)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((index, -scores), axis=1)[:, :min(k, scores.shape[1])]


def ranking_sums(recommended: np.ndarray, relevant: list, k: int) -> np.ndarray:
    """Sums over users of precision@k, recall@k, nDCG@k, MAP@k, and the user count.

    ``recommended[u]`` are a user's top-k items, ``relevant[u]`` the set of held-out
    items they liked. Users with no relevant items are skipped. Binary relevance;
    recall divides by ``|relevant|``; nDCG and MAP normalize by ``min(k, |relevant|)``.
    """
    total = np.zeros(5)
    for row in ranking_rows(recommended, relevant, k):
        total += row
    return total


def ranking_rows(recommended: np.ndarray, relevant: list, k: int) -> np.ndarray:
    """The terms of :func:`ranking_sums`, one row per user counted (reproducible mode sums them exactly)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    rows = []
    for recs, rel in zip(recommended, relevant):
        if len(rel) == 0:
            continue
        hits = np.isin(recs[:k], np.fromiter(rel, dtype=np.int64, count=len(rel))).astype(np.float64)
        ideal = min(k, len(rel))
        precision_at = np.cumsum(hits) / np.arange(1, hits.size + 1)
        rows.append([hits.sum() / k, hits.sum() / len(rel), (hits @ discounts[:hits.size]) / discounts[:ideal].sum(),
                     (precision_at * hits).sum() / ideal, 1.0])
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def ranking_means(sums, k: int) -> dict:
    """``precision_at_k`` and friends from (allreduced) :func:`ranking_sums`."""
    n = float(sums[-1])
    names = [f"{m}_at_{k}" for m in RANKING]
    if n == 0:
        return {**{name: float("nan") for name in names}, "ranked_users": 0}
    return {**{name: float(v) / n for name, v in zip(names, sums[:-1])}, "ranked_users": int(n)}
