"""Block layouts and rank folding: pure functions, checked against numpy and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpiml import ArgumentError
from mpiml.collectives.layout import (
    balanced_counts,
    block_counts,
    displacements,
    fold_to_power_of_two,
    real_rank,
)


@given(n=st.integers(0, 10_000), parts=st.integers(1, 300))
def test_balanced_counts_match_numpy_array_split(n, parts):
    expected = [len(block) for block in np.array_split(np.arange(n), parts)]
    assert balanced_counts(n, parts).tolist() == expected


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=20))
def test_displacements_are_running_sums(counts):
    bounds = displacements(counts)
    assert bounds[0] == 0 and bounds[-1] == sum(counts)
    assert np.diff(bounds).tolist() == counts


def test_block_counts_validates_custom_counts():
    assert block_counts(5, 2, [5, 0]).tolist() == [5, 0]
    assert block_counts(5, 2).tolist() == [3, 2]


@pytest.mark.parametrize("bad, message", [([1, 2], "sum to 5"), ([6, -1], "non-negative"),
                                          ([1, 1, 3], "must be 2 integers"), ([2.5, 2.5], "must be 2 integers")])
def test_block_counts_refuses_bad_counts(bad, message):
    with pytest.raises(ArgumentError, match=message):
        block_counts(5, 2, bad)


def test_balanced_counts_come_from_the_named_partition_policy():
    from mpiml.runtime import partition

    for n, parts in ((0, 3), (7, 3), (100, 7), (5, 9)):
        assert displacements(balanced_counts(n, parts)).tolist() == partition.array_split(n, parts).tolist()


@given(size=st.integers(1, 200))
def test_folding_leaves_a_power_of_two_in_rank_order(size):
    folded = [fold_to_power_of_two(rank, size) for rank in range(size)]
    q = folded[0][0]
    virtual = [v for _, v in folded if v is not None]
    assert q & (q - 1) == 0 and q <= size < 2 * q
    assert virtual == list(range(q))  # contiguous, increasing with the real rank
    assert [real_rank(v, size) for v in range(q)] == [r for r, (_, v) in enumerate(folded) if v is not None]
    for rank, (_, v) in enumerate(folded):
        if v is None:  # a rank that sits out hands its data to the rank just above it
            assert folded[rank + 1][1] is not None
