"""The named block-split policies against their definitions (numpy.array_split, n*b//p, brute force)."""

import numpy as np
import pytest

from mpiml.errors import ArgumentError
from mpiml.runtime import partition


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 100, 101])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 6, 8])
def test_policies_match_their_definitions(n, parts):
    split = [len(a) for a in np.array_split(np.arange(n), parts)]
    assert partition.sizes(partition.array_split(n, parts)).tolist() == split
    bounds = partition.contiguous(n, parts)
    assert bounds.tolist() == [n * b // parts for b in range(parts + 1)]
    for policy in (partition.array_split, partition.contiguous):
        b = policy(n, parts)
        assert b[0] == 0 and b[-1] == n and (np.diff(b) >= 0).all() and b.dtype == np.int64
        owners = partition.owner(b, np.arange(n))
        for item, o in enumerate(owners):
            lo, hi = partition.block(b, int(o))
            assert lo <= item < hi


def test_weighted_is_as_balanced_as_the_best_contiguous_split():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, parts = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        w = rng.pareto(1.5, n)
        b = partition.weighted(w, parts)
        assert b[0] == 0 and b[-1] == n and (np.diff(b) >= 0).all()
        heaviest = max(w[b[i]:b[i + 1]].sum() for i in range(parts))
        # brute force over every contiguous split into `parts` blocks (cuts anywhere)
        best = np.inf
        for cuts in np.ndindex(*([n + 1] * (parts - 1))):
            edges = [0, *sorted(cuts), n]
            best = min(best, max(w[edges[i]:edges[i + 1]].sum() for i in range(parts)))
        # nearest-cut rule: within one item's weight of the optimum
        assert heaviest <= best + w.max() + 1e-12


def test_zero_weights_and_bad_parts():
    assert partition.weighted(np.zeros(5), 2).tolist() == partition.contiguous(5, 2).tolist()
    with pytest.raises(ArgumentError, match="parts must be at least 1"):
        partition.contiguous(3, 0)
