"""sparse_allreduce against numpy on every rank's input (rebuilt locally from seeds) and against
``comm.Allreduce`` of the densified vectors: every dtype, sum/min/max, densities 0..1 with
duplicates, sizes 0, 1, below p and above, ranks with nothing, every algorithm; bitwise identical
on every rank. Errors on one rank are raised on every rank."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree
from oracle import DTYPES, make_input, within_bound

import mpiml
from mpiml.collectives import sparse as sparse_alg

_UFUNC = {"sum": np.add, "min": np.minimum, "max": np.maximum}


def _case_input(size, density, dtype, op, seed, rank):
    """Rank ``rank``'s ``(indices, values)``: about ``density * size`` positions with duplicates, any order."""
    rng = np.random.default_rng([seed, rank])
    if size == 0 or rng.random() < 0.15:   # some ranks hold nothing
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=dtype)
    k = int(rng.binomial(size, density)) + (int(rng.integers(0, 3)) if density else 0)   # a few duplicates
    idx = rng.integers(0, size, k).astype(rng.choice([np.int32, np.int64, np.uint32]))
    return idx, make_input(k, dtype, op, seed * 31 + rank)


def _dense(idx, val, size, op):
    """The rank's vector: duplicates combined by ``op`` in the order given, zeros elsewhere."""
    out = np.zeros(size, dtype=val.dtype)
    seen = np.zeros(size, dtype=bool)
    for i, v in zip(idx.tolist(), val):
        out[i] = _UFUNC[op](out[i], v) if seen[i] else v
        seen[i] = True
    return out


def _cases(p):
    rng = np.random.default_rng(19)
    for dtype in DTYPES:
        for op in ("sum", "min", "max") if np.dtype(dtype).kind != "c" else ("sum",):
            for size in (int(rng.choice([0, 1, max(p - 1, 1), p + 1])), 257):
                density = float(rng.choice([0.0, 0.02, 0.3, 1.0]))
                algorithm = str(rng.choice(sparse_alg.ALGORITHMS))
                yield dtype, op, size, density, algorithm, int(rng.integers(0, 2**31))


@pytest.mark.mpi
def test_sparse_allreduce_matches_numpy_and_mpi_bitwise_identical_on_every_rank():
    comm = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    problems = []
    for dtype, op, size, density, algorithm, seed in _cases(p):
        inputs = [_case_input(size, density, dtype, op, seed, r) for r in range(p)]
        dense = [_dense(i, v, size, op) for i, v in inputs]
        idx, val = inputs[rank]
        got = mpiml.sparse_allreduce(idx, val, size, op=op, algorithm=algorithm)
        path = sparse_alg.STATS["path"]
        coo_idx, coo_val = mpiml.sparse_allreduce_coo(idx, val, size, op=op, algorithm=algorithm)
        from_coo = np.zeros(size, dtype=got.dtype)
        from_coo[coo_idx] = coo_val
        label = (dtype, op, size, density, algorithm, path)
        if got.dtype != np.dtype(dtype) or got.shape != (size,):
            problems.append((label, "dtype/shape", got.dtype, got.shape))
            continue
        if path in ("sparse", "sparse_allgather", "local"):   # rank order, one rounding per holder: exactly the oracle's sums
            expected = dense[0].copy()
            for d in dense[1:]:
                expected = _UFUNC[op](expected, d)
            if not np.array_equal(got, expected):
                problems.append((label, "not the rank-order result", got[:6], expected[:6]))
        ok, why = within_bound(got, dense, op)
        if not ok:
            problems.append((label, why))
        if not np.array_equal(got, from_coo):
            problems.append((label, "coo and dense results differ"))
        if not np.all(np.isin(np.flatnonzero(np.any([d != 0 for d in dense], axis=0)) if size else [], coo_idx)):
            problems.append((label, "coo indices miss a held position"))
        if np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize >= 4 or np.dtype(dtype).kind in "iu":
            mine = _dense(idx, val, size, op)
            theirs = np.empty_like(mine)
            comm.Allreduce(mine, theirs, op={"sum": MPI.SUM, "min": MPI.MIN, "max": MPI.MAX}[op])
            if not np.allclose(got, theirs, rtol=1e-5, atol=1e-5):
                problems.append((label, "differs from comm.Allreduce"))
        everyone = comm.allgather(got.tobytes() + coo_idx.tobytes() + coo_val.tobytes())
        if any(e != everyone[0] for e in everyone):
            problems.append((label, "results differ between ranks"))
    agree(comm, not problems, problems[:3])


@pytest.mark.mpi
def test_sparse_allreduce_switches_and_out():
    comm = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    size = 1 << 17   # large enough for the dense allreduce to cost more than the sparse one's fixed work
    paths = {}
    for density in (0.0, 0.001, 1.0):
        k = int(density * size)
        idx = np.sort(np.random.default_rng([5, rank]).choice(size, k, replace=False))
        out = np.full(size, 7.0)
        res = mpiml.sparse_allreduce(idx, np.ones(k), size, out=out)
        paths[density] = sparse_alg.STATS["path"]
        expected = np.zeros(size)
        for r in range(p):
            expected[np.sort(np.random.default_rng([5, r]).choice(size, k, replace=False))] += 1.0
        agree(comm, res is out and np.array_equal(out, expected), (density, paths[density]))
        # the COO result: the lean path (sorted unique int64/int32 indices) as the general one (check mode),
        # bitwise; a result the caller still holds is never reused for the next call's
        for itype, dtype in ((np.int64, np.float64), (np.int32, np.float32)):
            val = np.random.default_rng([6, rank]).standard_normal(k).astype(dtype)
            val[::3] = -0.0
            held = mpiml.sparse_allreduce_coo(idx.astype(itype), val, size)
            kept = held[0].copy(), held[1].copy()
            general = mpiml.sparse_allreduce_coo(idx.astype(np.uint32), val, size, check=True)
            again = mpiml.sparse_allreduce_coo(idx.astype(itype), val[::-1].copy(), size)
            dense = np.zeros(size, dtype)
            dense[again[0]] = again[1]
            agree(comm, held[0].tobytes() == kept[0].tobytes() == general[0].tobytes()
                  and held[1].tobytes() == kept[1].tobytes() == general[1].tobytes()
                  and not np.shares_memory(held[1], again[1]) and (dense == 0).all() == (expected == 0).all(),
                  (density, itype, dtype))
    if p > 1:   # all nonzeros: a dense allreduce; hardly any: sparse all the way
        agree(comm, paths[1.0] == "dense" and paths[0.001] == paths[0.0] == "sparse_allgather", paths)


@pytest.mark.mpi
def test_sparse_allreduce_errors_are_raised_on_every_rank():
    comm = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    bad = np.array([5 if rank == p - 1 else 0])   # out of range on the last rank only
    with pytest.raises(mpiml.ArgumentError, match=r"indices must lie in \[0, 3\)"):
        mpiml.sparse_allreduce(bad, np.ones(1), 3)
    if p > 1:
        dtype = np.float32 if rank == 0 else np.float64
        with pytest.raises(mpiml.MismatchError, match="same size, op and values dtype"):
            mpiml.sparse_allreduce(np.array([0]), np.ones(1, dtype=dtype), 3)
        with pytest.raises(mpiml.MismatchError):
            mpiml.sparse_allreduce(np.array([0]), np.ones(1), 3 + rank, check=True)
    # the communicator still works afterwards
    agree(comm, mpiml.sparse_allreduce(np.array([rank % 3]), np.ones(1), 3).sum() == p)
