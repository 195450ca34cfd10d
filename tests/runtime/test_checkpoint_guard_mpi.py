"""Checkpoint guards at any rank count: data fingerprints do not depend on p; other data is refused."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI

from mpiml.errors import CheckpointError
from mpiml.runtime import fingerprint
from mpiml.runtime.lock import DirectoryLock
from mpiml.sgd import LinearModel


def _block(n, comm):
    return n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size


def _agree(comm, ok, detail=""):
    assert all(comm.allgather(bool(ok))), detail


@pytest.mark.mpi
def test_data_digests_are_the_serial_digest_of_the_whole_at_any_rank_count():
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(5)
    X = rng.normal(size=(23, 3)) * (rng.random((23, 3)) < 0.7)
    y = rng.integers(0, 3, 23).astype(float)
    lo, hi = _block(23, comm)
    whole = fingerprint.rows_digest(X, y)  # the serial oracle
    _agree(comm, fingerprint.rows_digest(X[lo:hi], y[lo:hi], comm) == whole)
    _agree(comm, fingerprint.rows_digest(sp.csr_matrix(X[lo:hi]), y[lo:hi], comm) == whole)
    users, items, values = rng.integers(0, 9, 31), rng.integers(0, 7, 31), rng.random(31)
    order = rng.permutation(31)  # any split of the ratings over the ranks, in any order
    mine = order[comm.rank::comm.size]
    _agree(comm, fingerprint.ratings_digest(users[mine], items[mine], values[mine], comm)
           == fingerprint.ratings_digest(users, items, values))


@pytest.mark.mpi
def test_a_checkpoint_resumes_only_the_same_data_and_a_locked_directory_is_refused():
    comm = MPI.COMM_WORLD
    directory = comm.bcast(tempfile.mkdtemp(prefix="mpiml-guard-") if comm.rank == 0 else None)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40).astype(float)
    lo, hi = _block(40, comm)
    settings = dict(strategy="sync", epochs=1, batch_size=8, comm=comm, checkpoint_dir=directory)
    LinearModel(**settings).fit(X[lo:hi], y[lo:hi])
    other = X.copy()
    other[-1, 0] += 1.0  # one value of the last rank's rows
    messages = []
    for kwargs, data in (({"resume": True, "epochs": 2}, (other, y)), ({}, (X, y))):
        try:
            LinearModel(**{**settings, **kwargs}).fit(data[0][lo:hi], data[1][lo:hi])
            messages.append(None)
        except CheckpointError as exc:
            messages.append(str(exc))
    _agree(comm, messages[0] and "was written with data=(rows 40, features 3, hash" in messages[0], messages)
    _agree(comm, messages[1] and "already holds a checkpoint" in messages[1], messages)
    lock = DirectoryLock(directory, "another job").acquire() if comm.rank == 0 else None
    try:
        LinearModel(**settings, resume=True).fit(X[lo:hi], y[lo:hi])
        message = None
    except CheckpointError as exc:
        message = str(exc)
    finally:
        if lock is not None:
            lock.release()
    _agree(comm, message and "is in use by another job" in message, message)
