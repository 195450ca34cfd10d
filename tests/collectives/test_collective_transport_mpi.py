"""The ring through a recording transport over real MPI: the messages it sends are the
schedule written out by hand from ``numpy.array_split``, and the result is the sum."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.collectives import SUM, registry
from mpiml.collectives.transport import Transport
from mpiml.collectives.workspace import Workspace


class RecordingTransport:
    """Every call logged as ``(call, peer, tag, bytes)``, then passed to the blocking transport."""

    def __init__(self, inner):
        self.inner, self.log = inner, []
        self.rank, self.size, self.comm = inner.rank, inner.size, inner.comm

    def sendrecv(self, sendbuf, dest, recvbuf, source, tag):
        self.log.append(("sendrecv", dest, source, tag, sendbuf.nbytes, recvbuf.nbytes))
        self.inner.sendrecv(sendbuf, dest, recvbuf, source, tag)

    def send(self, buf, dest, tag):
        self.log.append(("send", dest, None, tag, buf.nbytes, 0))
        self.inner.send(buf, dest, tag)

    def recv(self, buf, source, tag):
        self.log.append(("recv", None, source, tag, 0, buf.nbytes))
        self.inner.recv(buf, source, tag)


@pytest.mark.mpi(min_size=2)  # one rank never reaches an algorithm (the call is a local copy)
@pytest.mark.parametrize("n", [1, 23, 1000])
def test_ring_sends_the_array_split_schedule(n):
    comm = MPI.COMM_WORLD.Dup()
    try:
        p, r = comm.size, comm.rank
        transport = RecordingTransport(Transport(comm))
        x = (np.arange(n, dtype=np.float32) % 13) * (r + 1)
        out = np.empty_like(x)
        registry.get("allreduce", "ring").run(transport, x, out, SUM, Workspace())
        blocks = [len(b) * 4 for b in np.array_split(np.arange(n), p)]
        right, left = (r + 1) % p, (r - 1) % p
        # Reduce-scatter: step s sends block r - s and receives block r - s - 1; then the
        # allgather: step s sends block r + 1 - s and receives block r - s.
        expected = ([("sendrecv", right, left, 11, blocks[(r - s) % p], blocks[(r - s - 1) % p])
                     for s in range(p - 1)]
                    + [("sendrecv", right, left, 12, blocks[(r + 1 - s) % p], blocks[(r - s) % p])
                       for s in range(p - 1)])
        agree(comm, transport.log == expected, f"rank {r}: {transport.log} != {expected}")
        agree(comm, np.array_equal(out, (np.arange(n, dtype=np.float32) % 13) * (p * (p + 1) // 2)), "sum")
    finally:
        comm.Free()
