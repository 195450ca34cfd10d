"""Ring algorithms: reduce-scatter, allgather, and allreduce as the two in sequence.

Bandwidth-optimal (each rank sends 2(p-1)/p of the vector for allreduce) at the cost of
2(p-1) latency steps. Every block is reduced on exactly one rank and then copied, so all
ranks end with bitwise identical results. The reduction order around the ring depends on
the rank, so these need a commutative operator.
"""

from __future__ import annotations

import numpy as np

from mpiml.collectives.layout import displacements
from mpiml.collectives.workspace import msg

TAG_REDUCE_SCATTER = 11
TAG_ALLGATHER = 12


def _reduce_scatter_into(comm, x, acc, op, bounds, tmp, final_shift):
    """Ring reduce-scatter of ``x`` whose partial sums live in ``acc`` (same layout as x).

    After it, the rank owns block ``(rank + final_shift) % p`` of ``acc`` fully reduced.
    The first step reads the rank's own block straight from ``x``, and each received
    partial is combined as ``acc[b] = x[b] op received``, so no initial copy of ``x`` is
    made; ``acc`` may be ``x`` itself (in place).
    """
    p, r = comm.Get_size(), comm.Get_rank()
    right, left = (r + 1) % p, (r - 1) % p
    for step in range(p - 1):
        send_block = (r + final_shift - step - 1) % p
        recv_block = (r + final_shift - step - 2) % p
        source = x if step == 0 else acc
        send = source[bounds[send_block]:bounds[send_block + 1]]
        lo, hi = bounds[recv_block], bounds[recv_block + 1]
        received = tmp[: hi - lo]
        comm.Sendrecv(msg(send), right, TAG_REDUCE_SCATTER, msg(received), left, TAG_REDUCE_SCATTER)
        op(x[lo:hi], received, out=acc[lo:hi])


def _allgather_blocks(comm, out, bounds, owned_shift):
    """Ring allgather in place: the rank starts owning block ``(rank + owned_shift) % p``."""
    p, r = comm.Get_size(), comm.Get_rank()
    right, left = (r + 1) % p, (r - 1) % p
    for step in range(p - 1):
        send_block = (r + owned_shift - step) % p
        recv_block = (r + owned_shift - step - 1) % p
        comm.Sendrecv(
            msg(out[bounds[send_block]:bounds[send_block + 1]]), right, TAG_ALLGATHER,
            msg(out[bounds[recv_block]:bounds[recv_block + 1]]), left, TAG_ALLGATHER,
        )


def allreduce(comm, x, out, op, counts, workspace):
    """Ring allreduce of flat ``x`` into flat ``out`` (``out`` may be ``x``)."""
    bounds = displacements(counts)
    tmp = workspace.get("ring", int(counts.max()), x.dtype)
    # The rank ends the reduce-scatter owning block rank+1, which the allgather starts from.
    _reduce_scatter_into(comm, x, out, op, bounds, tmp, final_shift=1)
    _allgather_blocks(comm, out, bounds, owned_shift=1)
    return out


def reduce_scatter(comm, x, out, op, counts, workspace):
    """Ring reduce-scatter: ``out`` receives this rank's block (block ``rank``) of the sum."""
    p, r = comm.Get_size(), comm.Get_rank()
    bounds = displacements(counts)
    largest = int(counts.max())
    acc = workspace.get("ring_acc", int(bounds[-1]), x.dtype)
    tmp = workspace.get("ring", largest, x.dtype)
    _reduce_scatter_into(comm, x, acc, op, bounds, tmp, final_shift=0)
    np.copyto(out, acc[bounds[r]:bounds[r + 1]])
    return out


def allgather(comm, local, out, counts):
    """Ring allgather of variable-length blocks: ``out`` gets every rank's ``local`` in order."""
    r = comm.Get_rank()
    bounds = displacements(counts)
    np.copyto(out[bounds[r]:bounds[r + 1]], local)
    _allgather_blocks(comm, out, bounds, owned_shift=0)
    return out
