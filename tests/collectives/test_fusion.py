"""Tensor fusion's bucket plan, packing and unpacking (pure numpy)."""

from __future__ import annotations

import numpy as np

from mpiml.collectives import fusion
from mpiml.collectives.ops import SUM, resolve_op


def test_buckets_hold_one_dtype_in_order_and_respect_the_size():
    dtypes = ["f8", "f4", "f8", "f8", "i4", "f8"]
    nbytes = [8, 4, 24, 100, 4, 8]
    assert fusion.plan(nbytes, dtypes, 1 << 20) == [[0, 2, 3, 5], [1], [4]]
    assert fusion.plan(nbytes, dtypes, 32) == [[0, 2], [3], [5], [1], [4]]  # 100 B alone; 8 + 24 fits
    assert fusion.plan(nbytes, dtypes, 1) == [[0], [2], [3], [5], [1], [4]]
    assert fusion.plan([], [], 10) == []


def test_pack_and_unpack_round_trip_as_views():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s) for s in [(2, 3), (0,), (4,), (4,), (1, 1, 5)]]
    plan = fusion.Plan([a.shape for a in arrays], [a.dtype for a in arrays], 1 << 20)
    assert plan.buckets == [[0, 1, 2, 3, 4]] and plan.matches(arrays)
    assert not plan.matches(arrays[:4] + [arrays[4].ravel()])
    buffer = plan.pack(arrays, 0)
    assert np.array_equal(buffer, np.concatenate([a.ravel() for a in arrays]))
    results = [None] * len(arrays)
    plan.unpack(buffer, plan.parts[0], results)   # the two (4,) arrays are one run: one reshape
    assert all(r.shape == a.shape and np.array_equal(r, a) and (np.shares_memory(r, buffer) or r.size == 0)
               for r, a in zip(results, arrays))
    single = fusion.Plan([(4,)], [np.dtype("f8")], 1 << 20)
    packed = single.pack([arrays[2]], 0)
    assert not np.shares_memory(packed, arrays[2])  # reduced in place: never the caller's array
    assert single.whole and [v.shape for v in single.views(packed)] == [(4,)]
    two = fusion.Plan([(4,), (4,)], [np.dtype("f8")] * 2, 1 << 20)
    assert [v.tolist() for v in two.views(np.arange(8.0))] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_auto_keeps_fused_floating_sums_off_position_dependent_algorithms():
    assert fusion.fused_algorithm("ring", True, False, 3) == "rabenseifner"
    assert fusion.fused_algorithm("ring", True, False, 2) == "ring"     # two operands: a + b == b + a
    assert fusion.fused_algorithm("ring", True, True, 5) == "ring"      # integers, min, max: exact anyway
    assert fusion.fused_algorithm("ring", False, False, 5) == "ring"    # named: as asked
    assert fusion.exact_op(SUM, np.int32) and fusion.exact_op(resolve_op("max"), np.float64)
    assert not fusion.exact_op(SUM, np.float32)
