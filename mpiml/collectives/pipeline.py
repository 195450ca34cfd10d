"""Pipelined chain broadcast: the vector goes round the ring from the root in segments.

Each rank forwards a segment as soon as it has it, so for large messages the time
approaches n/bandwidth plus (p - 1) segment latencies, instead of log2(p) whole-vector
steps for the binomial tree.
"""

from __future__ import annotations

from mpi4py import MPI

from mpiml.collectives.workspace import msg

TAG_PIPELINE = 51
DEFAULT_SEGMENT_BYTES = 1 << 20


def bcast(comm, buf, root, segment_bytes=DEFAULT_SEGMENT_BYTES):
    """Chain broadcast of flat ``buf`` from ``root`` in segments of ``segment_bytes``."""
    p, r = comm.Get_size(), comm.Get_rank()
    if p == 1:
        return buf
    vrank = (r - root) % p
    prev, nxt = (r - 1) % p, (r + 1) % p
    per_segment = max(1, segment_bytes // max(buf.itemsize, 1))
    requests = []
    for start in range(0, buf.size, per_segment):
        segment = buf[start:start + per_segment]
        if vrank > 0:
            comm.Recv(msg(segment), prev, TAG_PIPELINE)
        if vrank < p - 1:
            requests.append(comm.Isend(msg(segment), nxt, TAG_PIPELINE))
    MPI.Request.Waitall(requests)
    return buf
