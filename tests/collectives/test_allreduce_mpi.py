"""allreduce against numpy on the gathered inputs: sampled cases (hypothesis) and 16 MiB.

The deterministic cross product of algorithms, ops, dtypes and edge counts is the shared
contract (``collective_contract.py``, run for every registered algorithm by ``test_collective_contract_mpi.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI
from mpi_helpers import agree
from oracle import DTYPES, make_input, ops_for, within_bound

import mpiml

ALGORITHMS = ("auto",) + mpiml.ALGORITHMS["allreduce"]  # every registered algorithm


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    op = draw(st.sampled_from(ops_for(dtype)))
    n = draw(st.one_of(st.integers(0, 12), st.integers(13, 3000)))
    return dtype, op, n, draw(st.booleans()), draw(st.integers(0, 2**31))


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(case=cases())
def test_allreduce_matches_numpy_and_is_identical_on_every_rank(algorithm, case):
    dtype, op, n, in_place, seed = case
    comm = MPI.COMM_WORLD
    x = make_input(n, dtype, op, seed + comm.rank)
    gathered = comm.allgather(x)
    before = x.copy()
    result = mpiml.allreduce(x, op=op, algorithm=algorithm, out=x if in_place else None)
    ok, why = within_bound(result, gathered, op)
    if in_place:
        ok, why = (ok and result is x), why or "in-place result is not x"
    else:
        ok, why = (ok and np.array_equal(x, before)), why or "input was modified"
    agree(comm, ok, why)
    digests = comm.allgather(result.tobytes())
    agree(comm, all(d == digests[0] for d in digests), "results differ between ranks")


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_large_message_16_mib(algorithm):
    comm = MPI.COMM_WORLD
    n = (16 << 20) // 4  # 16 MiB of float32: 16 pipeline segments, many times any eager limit
    base = (np.arange(n, dtype=np.int64) % 1000).astype(np.float32)
    x = base * np.float32(comm.rank + 1)
    out = np.empty_like(x)
    mpiml.allreduce(x, algorithm=algorithm, out=out)
    expected = base * np.float32(comm.size * (comm.size + 1) // 2)  # exact in float32
    ok = np.array_equal(out, expected)
    agree(comm, ok, "16 MiB sum mismatch")


@pytest.mark.mpi
def test_repeated_calls_take_the_plan_of_the_first_and_keep_its_checks():
    """The second and later identical calls skip the full path (api._plan): same bits, same refusals."""
    from mpiml.collectives import api
    from mpiml.errors import ArgumentError

    comm = MPI.COMM_WORLD
    failures = []
    for algorithm in ALGORITHMS:
        # every dtype where the MPI library is called directly (native, and auto's small messages)
        for dtype in DTYPES if algorithm in ("auto", "native") else (np.float64, np.int32):
            for op in ops_for(dtype):
                for n in (0, 7):
                    x = make_input(n, dtype, op, 11 * comm.rank + n)
                    gathered = comm.allgather(x)
                    first = mpiml.allreduce(x, op=op, algorithm=algorithm, out=np.empty_like(x))
                    y = x.copy()
                    first_in_place = mpiml.allreduce(y, op=op, algorithm=algorithm, out=y).copy()
                    for _ in range(2):
                        again = mpiml.allreduce(x, op=op, algorithm=algorithm, out=np.empty_like(x))
                        y = x.copy()
                        in_place = mpiml.allreduce(y, op=op, algorithm=algorithm, out=y)
                        if not (np.array_equal(again, first, equal_nan=True) and in_place is y
                                and np.array_equal(y, first_in_place, equal_nan=True)):
                            failures.append(f"{algorithm} {dtype} {op} n={n}: a repeat differs")
                    ok, why = within_bound(first, gathered, op)
                    if not ok:
                        failures.append(f"{algorithm} {dtype} {op} n={n}: {why}")
        # after a plan exists, what changed between calls is still checked (and a strided x still works)
        x = np.arange(8.0) + comm.rank
        mpiml.allreduce(x, algorithm=algorithm, out=np.empty(8))
        bad_outs = (np.empty(7), np.empty(8, np.float32), np.empty(16)[::2], x, np.empty(8))
        bad_outs[-1].flags.writeable = False
        for out in bad_outs[:3] + bad_outs[4:]:
            try:
                mpiml.allreduce(x, algorithm=algorithm, out=out)
                failures.append(f"{algorithm}: out {out.shape} {out.dtype} accepted")
            except ArgumentError:
                pass
        # views that do not own their memory but do not overlap: accepted (the overlap test is the slow one)
        expected = np.arange(8.0) * comm.size + comm.size * (comm.size - 1) / 2
        shared = np.zeros(17)
        shared[:8] = x
        for _ in range(2):
            if not np.array_equal(mpiml.allreduce(shared[:8], algorithm=algorithm, out=shared[9:]), expected):
                failures.append(f"{algorithm}: a view into a view of the same buffer summed wrong")
        overlapping = np.arange(9.0)
        try:
            mpiml.allreduce(overlapping[:8], algorithm=algorithm, out=overlapping[1:])
            failures.append(f"{algorithm}: an out overlapping x accepted")
        except ArgumentError:
            pass
        # the same arrays again (api._remember; the calls above with new arrays paused its stores): new values
        # are read, and what an array can change in place (made read-only, its dtype or shape) is refused
        api._memo_resume, api._memo_budget = 0, api.MAX_MEMOS
        x, out, y = np.arange(8.0), np.empty(8), np.ones(8)
        for k in range(4):
            x[:] = np.arange(8.0) + k + comm.rank
            y_before = y.copy()
            mpiml.allreduce(x, algorithm=algorithm, out=out)
            mpiml.allreduce(y, algorithm=algorithm, out=y)
            if not (np.array_equal(out, (np.arange(8.0) + k) * comm.size + comm.size * (comm.size - 1) / 2)
                    and np.array_equal(y, y_before * comm.size)):
                failures.append(f"{algorithm}: call {k} on the same arrays summed wrong")
        for change in ("writeable", "dtype", "shape", "x dtype"):
            x, out = np.arange(8.0), np.empty(8)
            for _ in range(3):
                mpiml.allreduce(x, algorithm=algorithm, out=out)
            memo = api._world.memo.get(id(x))
            if (algorithm in ("auto", "native") or comm.size == 1) and not (memo and memo[1] is out):
                failures.append(f"{algorithm}: no memo of the same arrays")
            if change == "writeable":
                out.flags.writeable = False
            elif change == "dtype":
                out.dtype = np.int64
            elif change == "shape":
                out.shape = (2, 4)
            else:
                x.dtype = np.int64
            try:
                mpiml.allreduce(x, algorithm=algorithm, out=out)
                failures.append(f"{algorithm}: out accepted after its {change} changed")
            except ArgumentError:
                pass
        strided = (np.arange(16.0) + comm.rank)[::2]
        expected = np.arange(0.0, 16.0, 2.0) * comm.size + comm.size * (comm.size - 1) / 2
        if not np.array_equal(mpiml.allreduce(strided, algorithm=algorithm, out=np.empty(8)), expected):
            failures.append(f"{algorithm}: strided input summed wrong")
    agree(comm, not failures, "; ".join(failures[:5]))
