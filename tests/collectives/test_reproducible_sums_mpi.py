"""Reproducible sums across rank counts: every size from 1 to p inside one mpiexec (sub-communicators),
compared bit for bit with the one-rank sum and against the exact sum (fractions)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree, sub_comm

import mpiml
from mpiml.collectives import reproducible as R


def adversarial(rows, cols, seed):
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-300, 300, (rows, cols))
    half = rows // 2
    T[half:2 * half, 0] = -T[:half, 0]
    T[:, 1] = rng.standard_normal(rows) * 1e-310
    T[0, 2], T[1, 2] = 1e300, -1e300
    T[2:, 2] = rng.uniform(-1, 1, rows - 2)
    return T


def splits(n, size, rng):
    """Three ways to deal ``n`` rows to ``size`` ranks: balanced blocks, random blocks (some empty), scattered."""
    yield [np.arange(n)[b] for b in np.array_split(np.arange(n), size)]
    cuts = np.sort(rng.integers(0, n + 1, size - 1))
    yield np.split(np.arange(n), cuts)
    owner = rng.integers(0, size, n)
    yield [np.flatnonzero(owner == r) for r in range(size)]


@pytest.mark.mpi
@pytest.mark.parametrize("seed", range(2))
def test_reproducible_sum_is_the_same_at_every_rank_count(seed):
    world = MPI.COMM_WORLD
    T = adversarial(203, 4, seed)
    expected = mpiml.reproducible_sum(T, comm=MPI.COMM_SELF)          # the one-rank result
    rng = np.random.default_rng(seed + 100)
    problems = []
    for size in range(1, world.size + 1):
        for parts in splits(T.shape[0], size, rng):
            with sub_comm(size) as sub:
                if sub is None:
                    continue
                got = mpiml.reproducible_sum(T[parts[sub.rank]], comm=sub)
                if not np.array_equal(got, expected, equal_nan=True):
                    problems.append((size, got.tolist()))
    agree(world, not problems, problems)
    for j in range(T.shape[1]):
        exact = sum((Fraction(float(t)) for t in T[:, j]), Fraction(0))
        bound = R.error_bound(T.shape[0], T.shape[0], np.abs(T[:, j]).max(), expected[j])
        assert abs(Fraction(float(expected[j])) - exact) <= Fraction(bound)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
def test_reproducible_allreduce_does_not_depend_on_algorithm_order_or_ranks(dtype):
    """At each size s, s operands dealt to the ranks in a random order: allreduce, reduce_scatter and reduce
    give the one-rank sum of those operands (with the allreduce's fixed count), whatever the algorithm;
    zero operands added by more ranks change nothing."""
    world = MPI.COMM_WORLD
    ops = adversarial(6, 5, 7)
    if dtype == "float32":
        ops = np.clip(ops, -1e30, 1e30).astype(np.float32)
    elif dtype == "complex128":
        ops = ops + 1j * ops[::-1]
    real = np.float32 if dtype == "float32" else np.float64

    def oracle(operands):
        flat = operands.view(np.float64) if operands.dtype.kind == "c" else operands
        return R.local_sum(flat.astype(np.float64), count=R.MAX_OPERANDS).astype(real).view(ops.dtype)

    problems = []
    rng = np.random.default_rng(3)
    padded = oracle(ops[:1])
    for size in range(1, world.size + 1):
        expected = oracle(ops[:size])
        for algorithm in ("auto",) + mpiml.ALGORITHMS["allreduce"]:
            order = rng.permutation(size)
            with sub_comm(size) as sub:
                if sub is None:
                    continue
                x = ops[order[sub.rank]].copy()
                got = mpiml.allreduce(x, algorithm=algorithm, comm=sub, reproducible=True)
                block = mpiml.reduce_scatter(x, comm=sub, reproducible=True)
                whole = np.concatenate(sub.allgather(block))
                root = mpiml.reduce(x, root=size - 1, comm=sub, reproducible=True)
                lone = mpiml.allreduce(ops[0] if order[sub.rank] == 0 else np.zeros_like(x), algorithm=algorithm,
                                       comm=sub, reproducible=True)
                for name, value in (("allreduce", got), ("reduce_scatter", whole), ("reduce", root),
                                    ("zeros", lone)):
                    if name == "reduce" and sub.rank != size - 1:
                        continue
                    want = padded if name == "zeros" else expected
                    if value.dtype != ops.dtype or not np.array_equal(value, want, equal_nan=True):
                        problems.append((size, algorithm, name))
    agree(world, not problems, problems)


@pytest.mark.mpi
def test_reproducible_refuses_a_product_on_every_rank():
    with pytest.raises(mpiml.ArgumentError):
        mpiml.allreduce(np.ones(3), op="prod", reproducible=True, check=True)
