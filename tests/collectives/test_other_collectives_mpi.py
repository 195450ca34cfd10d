"""reduce_scatter, allgather, bcast and reduce against numpy on the gathered inputs, sampled
by hypothesis (the deterministic cases and operator order are the shared contract,
``collective_contract.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI
from mpi_helpers import agree
from oracle import DTYPES, make_input, ops_for, reference, within_bound

import mpiml
from mpiml.collectives.layout import balanced_counts, displacements


@st.composite
def reduction_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    op = draw(st.sampled_from(ops_for(dtype)))
    return dtype, op, draw(st.integers(0, 200)), draw(st.integers(0, 2**31))


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ("auto",) + mpiml.ALGORITHMS["reduce_scatter"])
@pytest.mark.parametrize("custom_counts", [False, True])
@given(case=reduction_cases())
def test_reduce_scatter_gives_each_rank_its_block(algorithm, custom_counts, case):
    dtype, op, n, seed = case
    comm = MPI.COMM_WORLD
    counts = None
    if custom_counts:  # an uneven split every rank derives the same way, empty blocks included
        rng = np.random.default_rng(seed)
        cuts = np.sort(rng.integers(0, n + 1, size=comm.size - 1))
        counts = np.diff(np.concatenate([[0], cuts, [n]]))
    x = make_input(n, dtype, op, seed + comm.rank)
    gathered = comm.allgather(x)
    block = mpiml.reduce_scatter(x, op=op, algorithm=algorithm, counts=counts)
    layout = balanced_counts(n, comm.size) if counts is None else counts
    bounds = displacements(layout)
    mine = slice(bounds[comm.rank], bounds[comm.rank + 1])
    ok, why = within_bound(block, [g[mine] for g in gathered], op)
    agree(comm, ok and block.shape == (layout[comm.rank],), why or f"shape {block.shape}")


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ("auto",) + mpiml.ALGORITHMS["allgather"])
@given(dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31), width=st.integers(0, 3),
       max_rows=st.integers(0, 40))
def test_allgather_concatenates_variable_blocks_in_rank_order(algorithm, dtype, seed, width, max_rows):
    comm = MPI.COMM_WORLD
    rows = int(np.random.default_rng([seed, comm.rank]).integers(0, max_rows + 1))
    shape = (rows,) if width == 0 else (rows, width)
    x = make_input(int(np.prod(shape)), dtype, "sum", seed + comm.rank).reshape(shape)
    expected = np.concatenate(comm.allgather(x))
    result = mpiml.allgather(x, algorithm=algorithm)
    agree(comm, result.shape == expected.shape and np.array_equal(result, expected), "allgather mismatch")


@pytest.mark.mpi
def test_allgather_refuses_mismatched_row_shapes_on_every_rank():
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        pytest.skip("needs two ranks to disagree")
    x = np.zeros((2, 3 if comm.rank == 1 else 4))
    with pytest.raises(mpiml.MismatchError, match="rank 1"):
        mpiml.allgather(x)


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ("auto",) + mpiml.ALGORITHMS["bcast"])
@given(dtype=st.sampled_from(DTYPES), n=st.integers(0, 5000), seed=st.integers(0, 2**31),
       segment=st.sampled_from([1, 7, 64, 1 << 20]))
def test_bcast_copies_root_buffer_everywhere(algorithm, dtype, n, seed, segment):
    comm = MPI.COMM_WORLD
    root = seed % comm.size
    source = make_input(n, dtype, "sum", seed)  # the same on every rank: the oracle
    buf = source.copy() if comm.rank == root else np.zeros_like(source)
    returned = mpiml.bcast(buf, root=root, algorithm=algorithm, segment_bytes=segment)
    agree(comm, returned is buf and np.array_equal(buf, source), "bcast mismatch")


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ("auto",) + mpiml.ALGORITHMS["reduce"])
@given(case=reduction_cases(), in_place=st.booleans())
def test_reduce_lands_on_root_only(algorithm, case, in_place):
    dtype, op, n, seed = case
    comm = MPI.COMM_WORLD
    root = seed % comm.size
    x = make_input(n, dtype, op, seed + comm.rank)
    before = x.copy()
    gathered = comm.allgather(x)
    result = mpiml.reduce(x, root=root, op=op, algorithm=algorithm, out=x if in_place else None)
    if comm.rank == root:
        ok, why = within_bound(result, gathered, op)
    else:
        ok, why = result is None and np.array_equal(x, before), "non-root got a result or lost its input"
    agree(comm, ok, why)


@pytest.mark.mpi
def test_reference_oracle_agrees_with_mpi_allreduce():
    """The tests' own oracle checked against the MPI library's Allreduce."""
    comm = MPI.COMM_WORLD
    x = make_input(100, "float64", "sum", comm.rank)
    expected = np.empty_like(x)
    comm.Allreduce(x, expected)
    assert np.allclose(reference(comm.allgather(x), "sum"), expected, rtol=1e-12, atol=1e-12)
