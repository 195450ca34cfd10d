"""Ratings readers under MPI: each rank reads its byte range; together they read the file once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data.ratings import global_ids, lookup, read_ratings
from mpiml.errors import DataError



def shared_file(comm, name, text):
    """Rank 0 writes ``text``; every rank gets the path (after it exists)."""
    path = None
    if comm.rank == 0:
        path = str(Path(tempfile.mkdtemp(prefix="mpiml-ratings-")) / name)
        Path(path).write_text(text)
    path = comm.bcast(path, root=0)
    comm.Barrier()
    return path


def gather_shard(comm, shard):
    parts = comm.allgather((shard.users, shard.items, shard.values, shard.keys))
    return [np.concatenate([p[j] for p in parts]) for j in range(4)]


@pytest.mark.mpi
@pytest.mark.parametrize("lines", [1, 2, 7, 60])
def test_ranks_read_every_line_exactly_once(lines):
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(lines)
    rows = [(int(rng.integers(0, 10**6)), int(rng.integers(0, 500)), float(rng.integers(1, 11)) / 2)
            for _ in range(lines)]
    text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{9 * j}\n" for j, (u, i, r) in enumerate(rows))
    path = shared_file(comm, "ratings.csv", text)
    users, items, values, keys = gather_shard(comm, read_ratings(path, comm=comm))
    expected = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    ok = (np.array_equal(users, expected[:, 0].astype(np.int64)) and np.array_equal(values, expected[:, 2])
          and np.array_equal(items, expected[:, 1].astype(np.int64)) and np.array_equal(keys, np.arange(2, lines + 2)))
    agree(comm, ok, "gathered shards differ from numpy's parse")


@pytest.mark.mpi
@pytest.mark.parametrize("bad_line", [2, 17, 41])
def test_a_bad_line_raises_the_same_error_on_every_rank(bad_line):
    comm = MPI.COMM_WORLD
    lines = [f"{j}::{j % 7}::{j % 5 + 1}::0" for j in range(1, 42)]
    lines[bad_line - 1] = f"{bad_line}::oops::3::0"
    path = shared_file(comm, "ratings.dat", "\n".join(lines) + "\n")
    try:
        read_ratings(path, comm=comm)
        message = None
    except DataError as exc:
        message = str(exc)
    messages = comm.allgather(message)
    agree(comm, message is not None and message.startswith(f"{path}:{bad_line}: item id 'oops'"), message)
    agree(comm, len(set(messages)) == 1, messages)


@pytest.mark.mpi
def test_empty_file_fails_on_every_rank():
    comm = MPI.COMM_WORLD
    path = shared_file(comm, "u.data", "\n\n")
    try:
        read_ratings(path, comm=comm)
        message = None
    except DataError as exc:
        message = str(exc)
    agree(comm, message is not None and "no ratings" in message and path in message, message)


@pytest.mark.mpi
def test_id_map_is_the_same_on_every_rank():
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.rank)
    local = rng.integers(0, 50, size=rng.integers(0, 30))
    table = global_ids(local, comm=comm)
    everything = np.concatenate(comm.allgather(local))
    agree(comm, np.array_equal(table, np.unique(everything)))
    agree(comm, np.array_equal(table[lookup(table, local)], local))
    digests = comm.allgather(table.tobytes())
    agree(comm, all(d == digests[0] for d in digests))
