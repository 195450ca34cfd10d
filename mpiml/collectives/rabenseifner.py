"""Rabenseifner's allreduce: recursive-halving reduce-scatter, then recursive-doubling
allgather.

Moves as few bytes as the ring (about 2n per rank) in 2 log2(p) steps instead of
2(p-1). For p not a power of two the lowest ranks fold first (as in recursive
doubling). Each block is reduced on one rank only, so results are bitwise identical on
every rank; the halving order depends on the rank, so the operator must be commutative.
"""

from __future__ import annotations

from mpiml.collectives.doubling import fold_in, fold_out
from mpiml.collectives.layout import balanced_counts, displacements, real_rank
from mpiml.collectives.workspace import msg

TAG_HALVE = 31
TAG_DOUBLE = 32


def allreduce(comm, x, out, op, workspace):
    """Rabenseifner allreduce of flat ``x`` into flat ``out`` (may be ``x``)."""
    p = comm.Get_size()
    tmp = workspace.get("doubling", x.size, x.dtype)
    q, vrank, data = fold_in(comm, x, out, op, tmp)
    if vrank is not None:
        bounds = displacements(balanced_counts(x.size, q))
        lo, hi = 0, q  # the window of blocks this rank is still responsible for
        mask = q >> 1
        while mask:
            partner = real_rank(vrank ^ mask, p)
            mid = lo + mask
            if vrank & mask:
                keep, give = (mid, hi), (lo, mid)
            else:
                keep, give = (lo, mid), (mid, hi)
            k0, k1 = bounds[keep[0]], bounds[keep[1]]
            received = tmp[: k1 - k0]
            comm.Sendrecv(msg(data[bounds[give[0]]:bounds[give[1]]]), partner, TAG_HALVE,
                          msg(received), partner, TAG_HALVE)
            op(data[k0:k1], received, out=out[k0:k1])
            data = out
            lo, hi = keep
            mask >>= 1
        if data is not out:  # q == 1
            out[...] = data
        mask = 1
        while mask < q:
            partner = real_rank(vrank ^ mask, p)
            mine = (vrank // mask) * mask
            theirs = mine ^ mask
            comm.Sendrecv(msg(out[bounds[mine]:bounds[mine + mask]]), partner, TAG_DOUBLE,
                          msg(out[bounds[theirs]:bounds[theirs + mask]]), partner, TAG_DOUBLE)
            mask <<= 1
    fold_out(comm, out, q)
    return out
