"""Recursive doubling allreduce: log2(p) exchanges of the whole vector.

Latency-optimal for small messages. For p not a power of two, the lowest
``2 * (p - q)`` ranks first fold pairwise (see ``layout.fold_to_power_of_two``) and get
the result back at the end. Partners always combine with the lower rank's data on the
left, so both compute bitwise the same value and non-commutative operators are applied
in rank order.
"""

from __future__ import annotations

import numpy as np

from mpiml.collectives import model
from mpiml.collectives.layout import fold_to_power_of_two, real_rank
from mpiml.collectives.registry import register

TAG_FOLD = 21
TAG_EXCHANGE = 22
TAG_UNFOLD = 23


def fold_in(transport, x, out, op, tmp):
    """The folding pre-step. Returns ``(q, virtual_rank, data)`` where ``data`` is the
    array holding this rank's (possibly combined) contribution; None for a rank that
    sits out until :func:`fold_out`."""
    r, p = transport.rank, transport.size
    q, vrank = fold_to_power_of_two(r, p)
    if r < 2 * (p - q):
        if vrank is None:
            transport.send(x, r + 1, TAG_FOLD)
            return q, None, None
        transport.recv(tmp, r - 1, TAG_FOLD)
        op(tmp, x, out=out)
        return q, vrank, out
    return q, vrank, x


def fold_out(transport, out, q):
    """Give the result back to the ranks that sat out."""
    r, p = transport.rank, transport.size
    if r < 2 * (p - q):
        if r % 2:
            transport.send(out, r - 1, TAG_UNFOLD)
        else:
            transport.recv(out, r + 1, TAG_UNFOLD)


def _cost(n, p, r):
    return model.allreduce_doubling(n, p, r.step, r.beta, r.gamma)


@register("allreduce", "recursive_doubling", cost=_cost)
def allreduce(transport, x, out, op, workspace):
    """Recursive doubling allreduce of flat ``x`` into flat ``out`` (may be ``x``)."""
    p = transport.size
    tmp = workspace.get("doubling", x.size, x.dtype)
    q, vrank, data = fold_in(transport, x, out, op, tmp)
    if vrank is not None:
        sendrecv = transport.sendrecv
        # The result overwrites one of its operands on both partners alike (while ``out``
        # holds nothing yet, the partner's data lands there): numpy computes some ops with
        # another rounding when the output overlaps an input (complex multiply), so both
        # partners must be in the same case to stay bitwise identical.
        fresh = not np.may_share_memory(out, data)
        mask = 1
        while mask < q:
            partner = vrank ^ mask
            peer = real_rank(partner, p)
            received = out if fresh else tmp
            sendrecv(data, peer, received, peer, TAG_EXCHANGE)
            if partner < vrank:
                op(received, data, out=out)
            else:
                op(data, received, out=out)
            data, fresh = out, False
            mask <<= 1
        if data is not out:  # q == 1: nothing was exchanged
            out[...] = data
    fold_out(transport, out, q)
    return out
