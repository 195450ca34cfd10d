"""Nonblocking and fused collectives against the blocking calls (the oracle: bitwise equal on every rank).

The blocking calls are checked against numpy by the contract suite; here every case of a
batch is started at once and completed in an order of each rank's own (reverse, random,
by polling), then compared bit for bit with the blocking call of the same algorithm.
"""

from __future__ import annotations

import gc
import hashlib
import warnings

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree
from oracle import DTYPES, make_input, ops_for

import mpiml
from mpiml.collectives import nonblocking, registry
from mpiml.collectives.nonblocking import UnwaitedRequestWarning
from mpiml.collectives.select import choose

FIRST = mpiml.ReduceOp(lambda a, b, out: np.copyto(out, a), commutative=False, name="first")  # keeps rank order
# MPICH's MPI_Iallreduce combines floating operands as its MPI_Allreduce does (checked at p = 1..5); another
# library may pick other algorithms for its nonblocking calls (Open MPI's libnbc), so there the native
# floating sums and products are compared to rounding only.
NATIVE_BITWISE = "MPICH" in MPI.Get_library_version()


def _same(result, expected, algorithm, op, size, collective="allreduce"):
    """Bitwise, except native floating sums and products under a library not known to order them alike."""
    if result.dtype != expected.dtype or result.shape != expected.shape:
        return False
    if np.array_equal(result, expected, equal_nan=True):
        return True
    if algorithm == "auto":
        algorithm = choose(collective, "auto", expected.nbytes, size)
    inexact = result.dtype.kind in "fc" and getattr(op, "name", op) in ("sum", "prod")
    rtol = 1e-2 if result.dtype.itemsize <= 4 else 1e-6
    return (algorithm == "native" and inexact and not NATIVE_BITWISE
            and np.allclose(result, expected, rtol=rtol, atol=rtol, equal_nan=True))


def _digest(array):
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=8).hexdigest()


def _complete(requests, how, rank):
    """Every request's result, completed in order ``how`` ('reverse', 'random' (per rank), 'poll')."""
    order = list(range(len(requests)))
    if how == "reverse":
        order.reverse()
    elif how == "random":
        np.random.default_rng(1000 + rank).shuffle(order)
    results = [None] * len(requests)
    if how == "poll":
        left = set(order)
        while left:
            for i in sorted(left):
                if requests[i].test():
                    results[i] = requests[i].wait()
                    left.discard(i)
        return results
    for i in order:
        results[i] = requests[i].wait()
    return results


def _settle(comm, bad, digests):
    agree(comm, not bad, bad[:5])
    everyone = comm.allgather(digests)
    agree(comm, all(d == everyone[0] for d in everyone), "results differ between ranks")


@pytest.mark.mpi
def test_iallreduce_equals_allreduce_in_any_completion_order():
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    counts = sorted({0, max(p - 1, 1), 300})
    bad, digests = [], []
    for k, algorithm in enumerate(("auto", *registry.ALGORITHMS["allreduce"])):
        commutative_only = algorithm != "auto" and registry.get("allreduce", algorithm).commutative_only
        # every dtype, and each of its ops under some algorithm (the op turns with the algorithm)
        cases = [(dtype, ops_for(dtype)[(j + k) % len(ops_for(dtype))], n)
                 for j, dtype in enumerate(DTYPES) for n in counts]
        inputs = [make_input(n, dtype, op, 7 * n + r) for dtype, op, n in cases]
        if not commutative_only:
            cases.append(("float64", FIRST, 5))
            inputs.append(np.arange(5.0) + r)
        copies = [x.copy() for x in inputs]
        outs = [x if i % 3 == 0 else None for i, x in enumerate(copies)]  # some in place
        requests = [mpiml.iallreduce(x, op=op, algorithm=algorithm, out=out)
                    for x, (_, op, _), out in zip(copies, cases, outs)]
        results = _complete(requests, ("reverse", "random", "poll")[k % 3], r)
        for i, ((dtype, op, n), x) in enumerate(zip(cases, inputs)):
            expected = mpiml.allreduce(x, op=op, algorithm=algorithm)
            same = _same(results[i], expected, algorithm, op, p)
            placed = results[i] is copies[i] if outs[i] is not None else np.array_equal(copies[i], x)
            if not (same and placed):
                bad.append(f"{algorithm} {dtype} {getattr(op, 'name', op)} n={n}: same={same} placed={placed}")
            digests.append(_digest(results[i]))
    _settle(comm, bad, digests)


@pytest.mark.mpi
def test_ireduce_scatter_iallgather_ibcast_equal_the_blocking_calls():
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    bad, digests, requests, expected, reduced = [], [], [], [], []
    for algorithm in ("auto", *registry.ALGORITHMS["reduce_scatter"]):
        for dtype in ("int64", "float16"):
            for n in (0, 29):
                x = make_input(n, dtype, "sum", n + 11 * r)
                cuts = np.sort(np.random.default_rng(n).integers(0, n + 1, size=p - 1))
                for counts in (None, np.diff(np.concatenate([[0], cuts, [n]]))):
                    requests.append(mpiml.ireduce_scatter(x, algorithm=algorithm, counts=counts))
                    expected.append(lambda x=x, a=algorithm, c=counts: mpiml.reduce_scatter(x, algorithm=a, counts=c))
                    reduced.append((len(expected) - 1, choose("reduce_scatter", algorithm, x.nbytes, p)))
    for algorithm in ("auto", *registry.ALGORITHMS["allgather"]):
        for dtype in ("float64", "uint8"):
            for width in (0, 3):
                rows = [(q * 5 + 2) % 4 for q in range(p)]  # some ranks give no rows
                shape = (rows[r],) if width == 0 else (rows[r], width)
                x = make_input(int(np.prod(shape)), dtype, "sum", 3 * r + width).reshape(shape)
                for known in (None, rows):
                    requests.append(mpiml.iallgather(x, algorithm=algorithm, rows=known))
                    expected.append(lambda x=x, a=algorithm: mpiml.allgather(x, algorithm=a))
    for algorithm in ("auto", *registry.ALGORITHMS["bcast"]):
        for n in (0, 1, 700):
            source = make_input(n, "float64", "sum", n)
            for root in sorted({0, p - 1}):
                buf = source.copy() if r == root else np.zeros_like(source)
                requests.append(mpiml.ibcast(buf, root=root, algorithm=algorithm, segment_bytes=1000))
                expected.append(lambda s=source: s)
    results = _complete(requests, "random", r)
    sums = dict(reduced)
    for i, (result, oracle) in enumerate(zip(results, expected)):
        want = oracle()
        same = (_same(result, want, sums[i], "sum", p, "reduce_scatter") if i in sums else
                result.dtype == want.dtype and result.shape == want.shape and np.array_equal(result, want))
        if not same:
            bad.append(f"case {i}: {result!r} != {want!r}")
        digests.append(_digest(mpiml.allgather(np.atleast_1d(result).reshape(-1))))
    _settle(comm, bad, digests)


@pytest.mark.mpi
def test_iallgather_in_place_fills_blocks_at_any_places():
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    bad = []
    for algorithm in ("auto", "ring", "native"):
        for dtype in ("float32", "int16"):
            # two interleaved gathers into one array: chunk 0 and chunk 1 of every rank's block, some empty
            rows = np.array([[(q + k) % 3 for k in range(2)] for q in range(p)])
            starts = np.concatenate([[0], np.cumsum(rows.sum(axis=1))])[:-1] + 1  # row 0 belongs to nobody
            expected = np.full((int(rows.sum()) + 1, 2), -1, dtype=dtype)
            for q in range(p):
                n = rows[q].sum()
                expected[starts[q]:starts[q] + n] = make_input(2 * n, dtype, "sum", q).reshape(-1, 2)
            out = np.full_like(expected, -1)
            mine = slice(starts[r], starts[r] + rows[r].sum())
            out[mine] = expected[mine]
            requests = [mpiml.iallgather_in_place(out, rows[:, k], starts + (rows[:, 0] if k else 0), algorithm)
                        for k in range(2)]
            for request in requests[::-1 if r % 2 else 1]:
                if request.wait() is not out:
                    bad.append("wait() is not out")
            if not np.array_equal(out, expected):
                bad.append(f"{algorithm} {dtype}")
    agree(comm, not bad, bad)
    with pytest.raises(mpiml.ArgumentError, match="non-overlapping"):
        mpiml.iallgather_in_place(np.zeros((4, 2)), [3] * p, [0] * p if p > 1 else [2])


@pytest.mark.mpi
def test_requests_on_two_communicators_completed_in_opposite_orders():
    comm = MPI.COMM_WORLD
    half = comm.Split(comm.rank % 2, comm.rank)
    try:
        x = np.arange(1000, dtype=np.float64) * (comm.rank + 1)
        a = mpiml.iallreduce(x, algorithm="ring", comm=half)
        b = mpiml.iallreduce(x, algorithm="ring")
        c = mpiml.iallgather(x[:comm.rank + 1], algorithm="ring")
        order = (c, b, a) if comm.rank % 2 else (a, b, c)
        [request.wait() for request in order]
        agree(comm, np.array_equal(a.wait(), mpiml.allreduce(x, algorithm="ring", comm=half))
              and np.array_equal(b.wait(), mpiml.allreduce(x, algorithm="ring"))
              and np.array_equal(c.wait(), mpiml.allgather(x[:comm.rank + 1])))
    finally:
        half.Free()


@pytest.mark.mpi
def test_allreduce_many_equals_separate_calls():
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    rng = np.random.default_rng(r)
    shapes = [(3, 4), (0,), (1,), (p - 1 or 1,), (17,), (2, 2, 2), (300,), (5,)]
    dtypes = ["float64", "float32", "int32", "float64", "complex64", "float64", "float16", "int32"]
    arrays = [(rng.standard_normal(s) * 2).astype(d) for s, d in zip(shapes, dtypes)]
    bad = []
    for algorithm, op in (("native", "sum"), ("recursive_doubling", "prod"), ("rabenseifner", "sum"), ("tree", "max"),
                          ("auto", "sum")):
        real = [a for a in arrays if a.dtype.kind != "c" or op != "max"]
        separate = {name: [mpiml.allreduce(a, op=op, algorithm=name) for a in real]
                    for name in ((algorithm,) if algorithm != "auto" else ("native", "rabenseifner"))}
        for bucket_bytes in (64, 1 << 20):  # a few arrays per bucket; one bucket per dtype
            fused = mpiml.allreduce_many(real, op=op, algorithm=algorithm, bucket_bytes=bucket_bytes)
            late = mpiml.iallreduce_many(real, op=op, algorithm=algorithm, bucket_bytes=bucket_bytes).wait()
            for j, (a, f, g) in enumerate(zip(real, fused, late)):
                # auto: small buckets stay on native, larger ones get a position-free algorithm
                same = any(_same(f, want[j], name, op, p) for name, want in separate.items())
                late_same = any(_same(g, f, name, op, p) for name in separate)   # the library's nonblocking call
                if not (f.shape == a.shape and f.dtype == a.dtype and same and late_same):
                    bad.append(f"{algorithm} {op} bucket={bucket_bytes} {a.dtype}{a.shape}")
    ints = [np.arange(n, dtype=np.int64) * (r + 1) for n in (1, 7, 40)]
    for f, a in zip(mpiml.allreduce_many(ints, algorithm="ring", bucket_bytes=1 << 20), ints):
        if not np.array_equal(f, mpiml.allreduce(a, algorithm="ring")):
            bad.append("ring int64")
    # Repeated calls reuse the plan (runs of equal shapes unpacked by one reshape, dtypes
    # interleaved over two buckets, a non-contiguous input); results still held are never overwritten.
    # Values are small multiples of 1/4, so every algorithm's sum is exact and equals numpy's.
    runs = [np.full((2, 3), r + 1.5), np.full((2, 3), r - 0.25), np.ones(1) * (r + 1),
            np.arange(4, dtype=np.int32) + r, np.full(5, r * 0.5), np.full(5, 2.0 + r), np.arange(10.0)[::2] * r,
            np.zeros(0), np.full(3, r, dtype=np.int32)]
    want = [sum(np.asarray(x, dtype=x.dtype) for x in comm.allgather(a)) for a in runs]
    kept = []
    for call, bucket_bytes in enumerate((1 << 20, 1 << 20, 64, 1 << 20)):
        given = tuple(runs) if call % 2 else runs
        got = (mpiml.allreduce_many(given, bucket_bytes=bucket_bytes) if call < 3
               else mpiml.iallreduce_many(given, bucket_bytes=bucket_bytes).wait())
        kept.append(got)
        if not all(g.shape == w.shape and g.dtype == w.dtype and np.array_equal(g, w) for g, w in zip(got, want)):
            bad.append(f"repeated call {call}")
    for call in range(4):   # each call's results dropped by the next (malloc may hand their memory back)
        got = mpiml.allreduce_many(runs, bucket_bytes=64 if call % 2 else 1 << 20)
        if not all(np.array_equal(g, w) for g, w in zip(got, want)):
            bad.append(f"reused buffers, call {call}")
    if not all(np.array_equal(g, w) for got in kept for g, w in zip(got, want)):
        bad.append("a later call changed an earlier call's results")
    other = mpiml.allreduce_many([np.ones(3), np.ones(1)] + runs[2:])   # same count, other shapes: a new plan
    if [o.shape for o in other[:2]] != [(3,), (1,)] or not np.array_equal(other[0], np.full(3, float(p))):
        bad.append("a plan reused for other shapes")
    # a one-bucket plan leaves the dtypes to the pack: the same shapes with another dtype take the full path
    for fuse in (mpiml.allreduce_many, lambda a: mpiml.iallreduce_many(a).wait()):
        for dtype in (np.float64, np.float64, np.float32, np.int64):
            got = fuse([np.full(3, r + 1.0), np.full(2, r * 2.0).astype(dtype)])
            if not (got[1].dtype == dtype and np.array_equal(got[1], np.full(2, p * (p - 1.0)))
                    and np.array_equal(got[0], np.full(3, p * (p + 1) / 2))):
                bad.append(f"the same shapes as a one-bucket plan, {np.dtype(dtype)}")
    agree(comm, not bad, bad[:5])
    with pytest.raises(mpiml.ArgumentError, match="bucket_bytes"):
        mpiml.allreduce_many(arrays, bucket_bytes=0)
    with pytest.raises(mpiml.ArgumentError, match="sequence"):
        mpiml.allreduce_many(np.ones(3))


@pytest.mark.mpi
def test_a_request_never_waited_on_is_reported():
    comm = MPI.COMM_WORLD
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        request = mpiml.iallreduce(np.ones(100), algorithm="ring")
        line = request.site
        del request
        gc.collect()
        kept = mpiml.iallgather(np.ones(2), algorithm="native")
        assert nonblocking.report_unwaited() >= 1  # what the exit does: report, then complete
        nonblocking.drain()
        assert kept.test() and kept.wait().shape == (2 * comm.size,)
        done = mpiml.iallreduce(np.ones(3))
        done.wait()
        del done
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, UnwaitedRequestWarning)]
    agree(comm, len(messages) == 2 and all("test_nonblocking_mpi.py" in m for m in messages)
          and line in messages[0], messages)
    with pytest.raises(mpiml.ArgumentError, match="unknown op"):
        mpiml.iallreduce(np.ones(3), op="median")
