"""Pipelined chain broadcast: the vector goes round the ring from the root in segments.

Each rank forwards a segment as soon as it has it, so for large messages the time
approaches n/bandwidth plus (p - 1) segment latencies, instead of log2(p) whole-vector
steps for the binomial tree.
"""

from __future__ import annotations

from mpiml.collectives import model
from mpiml.collectives.registry import register

TAG_PIPELINE = 51
DEFAULT_SEGMENT_BYTES = 1 << 20


def _cost(n, p, r):
    return model.bcast_pipeline(n, p, r.step, r.beta, r.params.segment_bytes)


@register("bcast", "pipeline", cost=_cost)
def bcast(transport, buf, root, segment_bytes=None, workspace=None):
    """Chain broadcast of flat ``buf`` from ``root`` in segments of ``segment_bytes`` (default 1 MiB)."""
    p, r = transport.size, transport.rank
    if p == 1:
        return buf
    vrank = (r - root) % p
    prev, nxt = (r - 1) % p, (r + 1) % p
    per_segment = max(1, (segment_bytes or DEFAULT_SEGMENT_BYTES) // max(buf.itemsize, 1))
    requests = []
    for start in range(0, buf.size, per_segment):
        segment = buf[start:start + per_segment]
        if vrank > 0:
            transport.recv(segment, prev, TAG_PIPELINE)
        if vrank < p - 1:
            requests.append(transport.isend(segment, nxt, TAG_PIPELINE))
    transport.waitall(requests)
    return buf
