"""Recursive doubling allreduce: log2(p) exchanges of the whole vector.

Latency-optimal for small messages. For p not a power of two, the lowest
``2 * (p - q)`` ranks first fold pairwise (see ``layout.fold_to_power_of_two``) and get
the result back at the end. Partners always combine with the lower rank's data on the
left, so both compute bitwise the same value and non-commutative operators are applied
in rank order.
"""

from __future__ import annotations

from mpiml.collectives.layout import fold_to_power_of_two, real_rank
from mpiml.collectives.workspace import msg

TAG_FOLD = 21
TAG_EXCHANGE = 22
TAG_UNFOLD = 23


def fold_in(comm, x, out, op, tmp):
    """The folding pre-step. Returns ``(q, virtual_rank, data)`` where ``data`` is the
    array holding this rank's (possibly combined) contribution; None for a rank that
    sits out until :func:`fold_out`."""
    r, p = comm.Get_rank(), comm.Get_size()
    q, vrank = fold_to_power_of_two(r, p)
    if r < 2 * (p - q):
        if vrank is None:
            comm.Send(msg(x), r + 1, TAG_FOLD)
            return q, None, None
        comm.Recv(msg(tmp), r - 1, TAG_FOLD)
        op(tmp, x, out=out)
        return q, vrank, out
    return q, vrank, x


def fold_out(comm, out, q):
    """Give the result back to the ranks that sat out."""
    r, p = comm.Get_rank(), comm.Get_size()
    if r < 2 * (p - q):
        if r % 2:
            comm.Send(msg(out), r - 1, TAG_UNFOLD)
        else:
            comm.Recv(msg(out), r + 1, TAG_UNFOLD)


def allreduce(comm, x, out, op, workspace):
    """Recursive doubling allreduce of flat ``x`` into flat ``out`` (may be ``x``)."""
    p = comm.Get_size()
    tmp = workspace.get("doubling", x.size, x.dtype)
    q, vrank, data = fold_in(comm, x, out, op, tmp)
    if vrank is not None:
        mask = 1
        while mask < q:
            partner = vrank ^ mask
            comm.Sendrecv(msg(data), real_rank(partner, p), TAG_EXCHANGE,
                          msg(tmp), real_rank(partner, p), TAG_EXCHANGE)
            if partner < vrank:
                op(tmp, data, out=out)
            else:
                op(data, tmp, out=out)
            data = out
            mask <<= 1
        if data is not out:  # q == 1: nothing was exchanged
            out[...] = data
    fold_out(comm, out, q)
    return out
