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
