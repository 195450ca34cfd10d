"""Argument checks: clear errors, the same on every rank in check mode, no hang."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import mpiml
from mpiml.collectives.algorithms.ring import TAG_REDUCE_SCATTER


@pytest.mark.mpi
@pytest.mark.parametrize("call, message", [
    (lambda: mpiml.allreduce(np.array(["a", "b"])), "not numeric"),
    (lambda: mpiml.allreduce(np.ones(3, dtype=bool)), "not numeric"),
    (lambda: mpiml.allreduce(np.ones(3), op="median"), "unknown op 'median'"),
    (lambda: mpiml.allreduce(np.ones(3), algorithm="butterfly"), "unknown allreduce algorithm 'butterfly'"),
    (lambda: mpiml.allreduce(np.ones(3, dtype=complex), op="max"), "not defined for complex"),
    (lambda: mpiml.allreduce(np.ones(3), out=np.ones(4)), r"out has shape \(4,\)"),
    (lambda: mpiml.allreduce(np.ones(3), out=np.ones(6)[::2]), "must be a writeable C-contiguous array"),
    (lambda: mpiml.reduce_scatter(np.ones(3), counts=[4] * MPI.COMM_WORLD.size),
     "counts must be non-negative and sum to 3"),
    (lambda: mpiml.bcast([1.0, 2.0]), "bcast writes in place and needs a numpy array"),
    (lambda: mpiml.bcast(np.ones(3), root=99), "root 99 is not a rank"),
    (lambda: mpiml.reduce(np.ones(3), root=-1), "root -1 is not a rank"),
], ids=["str", "bool", "op", "algorithm", "complex-max", "out-shape", "out-strided", "counts",
        "bcast-list", "bcast-root", "reduce-root"])
@pytest.mark.parametrize("check", [False, True])
def test_bad_arguments_raise_argument_error_on_every_rank(call, message, check, monkeypatch):
    if check:  # the environment switch, as a job would set it
        monkeypatch.setenv("MPIML_CHECK", "1")
    with pytest.raises(mpiml.ArgumentError, match=message):
        call()


@pytest.mark.mpi(min_size=2)
def test_check_mode_catches_a_bad_argument_on_one_rank_only():
    comm = MPI.COMM_WORLD
    x = np.array(["text"]) if comm.rank == comm.size - 1 else np.ones(1)
    with pytest.raises(mpiml.ArgumentError, match=f"rank {comm.size - 1}"):
        mpiml.allreduce(x, check=True)
    assert mpiml.allreduce(np.ones(2), check=True).tolist() == [comm.size] * 2  # still usable


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("field", ["count", "dtype", "op", "algorithm"])
def test_check_mode_reports_mismatched_arguments_on_every_rank(field):
    comm = MPI.COMM_WORLD
    odd = comm.rank == 1
    kwargs = dict(x=np.ones(4), op="sum", algorithm="ring")
    if odd:
        kwargs.update({"count": dict(x=np.ones(5)), "dtype": dict(x=np.ones(4, np.float32)),
                       "op": dict(op="max"), "algorithm": dict(algorithm="tree")}[field])
    with pytest.raises(mpiml.MismatchError, match="rank 1"):
        mpiml.allreduce(kwargs.pop("x"), check=True, **kwargs)


@pytest.mark.mpi(min_size=2)
def test_check_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("MPIML_CHECK", "1")
    comm = MPI.COMM_WORLD
    with pytest.raises(mpiml.MismatchError, match="ranks called bcast with different arguments"):
        mpiml.bcast(np.ones(3 + (comm.rank == 1)), root=0)


@pytest.mark.mpi(min_size=2)
def test_collectives_do_not_match_user_messages_on_the_same_communicator():
    comm = MPI.COMM_WORLD
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    mine = np.full(3, 1000.0 + comm.rank)
    # A pending user message with the very tag the ring uses: it must not be consumed.
    request = comm.Isend(mine, dest=right, tag=TAG_REDUCE_SCATTER)
    total = mpiml.allreduce(np.arange(10.0), algorithm="ring", comm=comm)
    received = np.empty(3)
    comm.Recv(received, source=left, tag=TAG_REDUCE_SCATTER)
    request.Wait()
    assert np.array_equal(total, np.arange(10.0) * comm.size)
    assert np.array_equal(received, np.full(3, 1000.0 + left))


@pytest.mark.mpi
def test_sub_communicators_work_and_get_their_own_duplicate():
    comm = MPI.COMM_WORLD
    half = comm.Split(comm.rank % 2, comm.rank)
    try:
        for algorithm in mpiml.ALGORITHMS["allreduce"]:  # every registered algorithm
            total = mpiml.allreduce(np.array([comm.rank], dtype=np.int64), algorithm=algorithm, comm=half)
            assert total[0] == sum(r for r in range(comm.size) if r % 2 == comm.rank % 2)
    finally:
        half.Free()
