"""The synthetic ratings sampler: successive sampling like the Gumbel top-k reference, in O(ratings)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mpiml.data.synthetic_ratings import (SyntheticSpec, gumbel_top_k, ratings_per_user, sample_items,
                                          synthetic_ratings, true_factors)


def _weights(items, skew, seed=0):
    w = np.random.default_rng(seed).permutation(np.arange(1, items + 1, dtype=float) ** -skew)
    return w / w.sum()


@pytest.mark.parametrize("items,count,skew", [(30, 5, 0.8), (40, 9, 1.5), (25, 1, 0.0)])
def test_inclusion_frequencies_match_the_gumbel_reference(items, count, skew):
    weights = _weights(items, skew)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    users = 4000
    keys = sample_items(np.full(users, count), np.log(weights), cdf, np.random.default_rng(1))
    assert keys.size == users * count and np.unique(keys).size == keys.size
    assert np.array_equal(np.bincount(keys // items, minlength=users), np.full(users, count))
    ours = np.bincount(keys % items, minlength=items) / users
    rng = np.random.default_rng(2)
    reference = np.bincount(np.concatenate([gumbel_top_k(count, np.log(weights), rng) for _ in range(users)]),
                            minlength=items) / users
    # Both are inclusion probabilities of the same design; 4000 users: standard error <= 0.008 each.
    assert np.abs(ours - reference).max() < 0.04, np.abs(ours - reference).max()


def test_heavy_users_and_every_item():
    items = 50
    weights = _weights(items, 1.0)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    counts = np.array([1, 13, 30, 50, 12, 49])  # 13 and more: the top-k reference path
    keys = sample_items(counts, np.log(weights), cdf, np.random.default_rng(3))
    assert np.array_equal(np.bincount(keys // items, minlength=counts.size), counts)
    assert np.unique(keys).size == keys.size and np.all(np.diff(keys) > 0)


def test_many_users_and_items_cost_what_the_ratings_cost():
    """100k users x 50k items with 20k ratings: memory far below users x items (and no users x items loop)."""
    spec = SyntheticSpec(users=100_000, items=50_000, ratings=20_000, rank=2, seed=3)
    tracemalloc.start()
    shard = synthetic_ratings(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, peak  # U, V and the weights are ~10 MB; users x items would be 5e9 entries
    assert np.unique(shard.users * spec.items + shard.items).size == len(shard)
    u, _, weights, _ = true_factors(spec)
    assert len(shard) == ratings_per_user(spec, weights).sum() and u.shape == (spec.users, 2)


def test_progress_reports_every_rating():
    spec = SyntheticSpec(users=3000, items=200, ratings=9000, seed=1)
    calls = []
    shard = synthetic_ratings(spec, 1, 2, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (len(shard), len(shard)) and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:]))
