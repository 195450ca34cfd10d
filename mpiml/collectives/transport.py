"""The point-to-point calls the hand-written algorithms are written against.

An algorithm receives a transport instead of a communicator, so the same schedule can
run over blocking MPI calls (:class:`Transport`, the default), be recorded or simulated
in a test, or later be driven by nonblocking calls. A transport moves the bytes of flat
contiguous numpy arrays (any dtype) and offers:

``rank``, ``size``
    this process's rank and the number of ranks;
``comm``
    the communicator (the ``native`` algorithms call the MPI library's collectives on it);
``sendrecv(sendbuf, dest, recvbuf, source, tag)``
    send to ``dest`` while receiving from ``source``, both with ``tag``;
``send(buf, dest, tag)``, ``recv(buf, source, tag)``
    blocking send and receive;
``isend(buf, dest, tag)`` and ``waitall(requests)``
    a send that returns at once, and the wait for several of them.
"""

from __future__ import annotations

from mpi4py import MPI


class Transport:
    """Blocking MPI point-to-point on ``comm``, messages typed as bytes.

    The calls are plain functions bound at construction (no attribute lookups or method
    binding per step): a step of a hand-written algorithm is a few microseconds of Python.
    """

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        byte = MPI.BYTE

        def sendrecv(sendbuf, dest, recvbuf, source, tag, _call=comm.Sendrecv):
            _call([sendbuf, byte], dest, tag, [recvbuf, byte], source, tag)

        def send(buf, dest, tag, _call=comm.Send):
            _call([buf, byte], dest, tag)

        def recv(buf, source, tag, _call=comm.Recv):
            _call([buf, byte], source, tag)

        def isend(buf, dest, tag, _call=comm.Isend):
            return _call([buf, byte], dest, tag)

        self.sendrecv, self.send, self.recv, self.isend = sendrecv, send, recv, isend

    @staticmethod
    def waitall(requests) -> None:
        """Wait for every request :meth:`isend` returned."""
        MPI.Request.Waitall(requests)
