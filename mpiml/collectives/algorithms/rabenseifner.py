"""Rabenseifner's allreduce: recursive-halving reduce-scatter, then recursive-doubling
allgather.

Moves as few bytes as the ring (about 2n per rank) in 2 log2(p) steps instead of
2(p-1). For p not a power of two the lowest ranks fold first (as in recursive
doubling). Each block is reduced on one rank only, so results are bitwise identical on
every rank; the halving order depends on the rank, so the operator must be commutative.

The element ranges of every step depend only on n, p and the rank; they are computed
once per size (:func:`schedule`) and kept in the workspace.
"""

from __future__ import annotations

import numpy as np

from mpiml.collectives import model
from mpiml.collectives.algorithms.doubling import fold_in, fold_out
from mpiml.collectives.layout import balanced_counts, displacements, fold_to_power_of_two, real_rank
from mpiml.collectives.registry import register

TAG_HALVE = 31
TAG_DOUBLE = 32


def schedule(n: int, p: int, rank: int):
    """``(halving, doubling)`` steps of a rank that takes part (None for one that sits out).

    A halving step is ``(partner, give_lo, give_hi, keep_lo, keep_hi)``: send the half
    given away, receive the partner's copy of the half kept and reduce it. A doubling
    step is ``(partner, mine_lo, mine_hi, theirs_lo, theirs_hi)``: swap the reduced blocks.
    """
    q, vrank = fold_to_power_of_two(rank, p)
    if vrank is None:
        return None
    bounds = displacements(balanced_counts(n, q)).tolist()
    halving, doubling = [], []
    lo, hi = 0, q  # the window of blocks this rank is still responsible for
    mask = q >> 1
    while mask:
        mid = lo + mask
        keep, give = ((mid, hi), (lo, mid)) if vrank & mask else ((lo, mid), (mid, hi))
        halving.append((real_rank(vrank ^ mask, p), bounds[give[0]], bounds[give[1]],
                        bounds[keep[0]], bounds[keep[1]]))
        lo, hi = keep
        mask >>= 1
    mask = 1
    while mask < q:
        mine = (vrank // mask) * mask
        theirs = mine ^ mask
        doubling.append((real_rank(vrank ^ mask, p), bounds[mine], bounds[mine + mask],
                         bounds[theirs], bounds[theirs + mask]))
        mask <<= 1
    return tuple(halving), tuple(doubling)


def _cost(n, p, r):
    return model.allreduce_rabenseifner(n, p, r.step, r.beta, r.gamma)


@register("allreduce", "rabenseifner", cost=_cost, commutative_only=True)
def allreduce(transport, x, out, op, workspace):
    """Rabenseifner allreduce of flat ``x`` into flat ``out`` (may be ``x``)."""
    p, r = transport.size, transport.rank
    tmp = workspace.get("doubling", x.size, x.dtype)
    steps = workspace.plan(("rabenseifner", x.size, p, r), lambda: schedule(x.size, p, r))
    q, vrank, data = fold_in(transport, x, out, op, tmp)
    if steps is not None:
        halving, doubling = steps
        sendrecv = transport.sendrecv
        # While ``out`` holds nothing yet (out of place, before the first combination),
        # the partner's half can land in place there.
        fresh = not np.may_share_memory(out, data)
        for partner, give_lo, give_hi, lo, hi in halving:
            received = out[lo:hi] if fresh else tmp[: hi - lo]
            sendrecv(data[give_lo:give_hi], partner, received, partner, TAG_HALVE)
            op(received, data[lo:hi], out=out[lo:hi])  # commutative: the order of operands is free
            data, fresh = out, False
        if data is not out:  # q == 1
            out[...] = data
        for partner, mine_lo, mine_hi, theirs_lo, theirs_hi in doubling:
            sendrecv(out[mine_lo:mine_hi], partner, out[theirs_lo:theirs_hi], partner, TAG_DOUBLE)
    fold_out(transport, out, q)
    return out
