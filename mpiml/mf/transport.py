"""The communication matrix factorization uses, timed: factor exchange, sums, ring shifts.

The algorithms receive an :class:`Exchange` and call only its methods, so the math
modules stay free of MPI and the transport is a choice (``algorithm`` of mpiml's
allgather: ``"auto"``, ``"ring"`` or ``"native"``).
"""

from __future__ import annotations

import time

import numpy as np

from mpiml.collectives import allgather, allreduce
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.checkpoint import read_checkpoint, write_checkpoint
from mpiml.runtime.comm import private_comm, resolve_comm
from mpiml.runtime.errors import ArgumentError, CheckpointError

EXCHANGES = ("auto", "ring", "native")


class Exchange:
    """Collectives on ``comm`` that add their wall time to ``seconds``."""

    def __init__(self, comm=None, algorithm: str = "auto"):
        if algorithm not in EXCHANGES:
            raise ArgumentError(f"unknown exchange {algorithm!r}; expected one of {list(EXCHANGES)}")
        self.comm = resolve_comm(comm)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.algorithm = algorithm
        self.seconds = 0.0
        self.bytes = 0

    def gather(self, block: np.ndarray) -> np.ndarray:
        """Every rank's rows of a factor matrix, concatenated in rank order."""
        start = time.perf_counter()
        out = allgather(np.ascontiguousarray(block), algorithm=self.algorithm, comm=self.comm)
        self.seconds += time.perf_counter() - start
        self.bytes += out.nbytes - block.nbytes
        return out

    def sum(self, values) -> np.ndarray:
        """Elementwise sum over ranks (identical result on every rank)."""
        start = time.perf_counter()
        out = allreduce(np.asarray(values, dtype=np.float64), comm=self.comm)
        self.seconds += time.perf_counter() - start
        return out

    def shift(self, block: np.ndarray, incoming_rows: int) -> np.ndarray:
        """Send ``block`` to rank - 1 and receive the block of rank + 1 (ring Sendrecv)."""
        if self.size == 1:
            return block
        start = time.perf_counter()
        incoming = np.empty((incoming_rows, *block.shape[1:]), dtype=block.dtype)
        comm = private_comm(self.comm)
        comm.Sendrecv(np.ascontiguousarray(block), dest=(self.rank - 1) % self.size, sendtag=71,
                      recvbuf=incoming, source=(self.rank + 1) % self.size, recvtag=71)
        self.seconds += time.perf_counter() - start
        self.bytes += incoming.nbytes
        return incoming


def send_to_owners(owner: np.ndarray, arrays: list, comm=None) -> list:
    """Move each entry of ``arrays`` to rank ``owner[j]`` (all-to-all); returns what arrived.

    What a rank receives is ordered by source rank, then by position at the source.
    """
    comm = private_comm(comm)
    size = comm.Get_size()
    if size == 1:
        return [np.asarray(a) for a in arrays]
    order = np.argsort(owner, kind="stable")
    cuts = np.searchsorted(owner[order], np.arange(size + 1))
    sent = [[np.asarray(a)[order[cuts[d]:cuts[d + 1]]] for a in arrays] for d in range(size)]
    received = comm.alltoall(sent)
    return [np.concatenate([parts[j] for parts in received]) for j in range(len(arrays))]


def save_checkpoint(directory, step: int, arrays: dict, meta: dict, comm=None) -> None:
    """Rank 0 writes the checkpoint; every rank learns whether it worked."""
    comm = resolve_comm(comm)
    error = None
    if comm.Get_rank() == 0:
        try:
            write_checkpoint(directory, step, arrays, meta)
        except CheckpointError as exc:
            error = exc
    raise_if_any(error, comm)


def load_checkpoint(directory, expect: dict, comm=None):
    """``(arrays, manifest)`` of the latest checkpoint (read on rank 0, broadcast), or None.

    Raises :class:`CheckpointError` on every rank if it cannot be read or if a value of
    ``expect`` (algorithm, sizes, rank) differs from the manifest's.
    """
    comm = resolve_comm(comm)
    found, error = None, None
    if comm.Get_rank() == 0:
        try:
            found = read_checkpoint(directory)
            if found is not None:
                wrong = {k: (found[1].get(k), v) for k, v in expect.items() if found[1].get(k) != v}
                if wrong:
                    raise CheckpointError(
                        f"checkpoint in {directory} does not fit this run: "
                        + ", ".join(f"{k} is {have!r} there, {want!r} here" for k, (have, want) in wrong.items()))
        except CheckpointError as exc:
            error = exc
    raise_if_any(error, comm)
    return private_comm(comm).bcast(found, root=0)
