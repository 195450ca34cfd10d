"""The synthetic generator: independent of the rank count, low rank plus the stated noise."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.data.synthetic_ratings import SyntheticSpec, parse_spec, synthetic_ratings, true_factors
from mpiml.errors import ArgumentError

SPEC = SyntheticSpec(users=700, items=300, ratings=20000, rank=4, noise=0.25, seed=5)


def _whole(spec, size):
    parts = [synthetic_ratings(spec, r, size) for r in range(size)]
    cat = [np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "values", "keys")]
    order = np.argsort(cat[3])
    return [c[order] for c in cat]


@pytest.mark.parametrize("size", [2, 3, 5])
def test_same_data_at_any_number_of_ranks(size):
    for a, b in zip(_whole(SPEC, 1), _whole(SPEC, size)):
        assert np.array_equal(a, b)


def test_low_rank_plus_noise_with_distinct_pairs_and_skew():
    users, items, values, keys = _whole(SPEC, 1)
    assert np.array_equal(keys, np.arange(keys.size))
    assert np.unique(users * SPEC.items + items).size == users.size
    u, v, _, _ = true_factors(SPEC)
    residual = values - SPEC.mean - np.einsum("ij,ij->i", u[users], v[items])
    assert abs(residual.std() - SPEC.noise) < 0.02 and abs(residual.mean()) < 0.02
    counts = np.sort(np.bincount(items, minlength=SPEC.items))[::-1]
    assert counts[:30].sum() > 3 * counts[-30:].sum()  # popular items are far more popular
    assert abs(users.size - SPEC.ratings) < 0.1 * SPEC.ratings


def test_parse_spec():
    spec = parse_spec("synthetic:users=10,items=5,ratings=1e3,rank=2,noise=0.5,seed=9")
    assert (spec.users, spec.items, spec.ratings, spec.rank, spec.noise, spec.seed) == (10, 5, 1000, 2, 0.5, 9)
    assert parse_spec(spec.describe()) == spec
    with pytest.raises(ArgumentError, match="unknown synthetic parameter"):
        parse_spec("synthetic:user=3")
    with pytest.raises(ArgumentError, match="synthetic users must be at least 1, got 0"):
        parse_spec("synthetic:users=0")
