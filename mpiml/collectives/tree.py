"""Binomial trees: reduce to a root, broadcast from a root, and allreduce as both.

log2(p) steps each, but the whole vector travels at every step, so these suit small
messages. The reduce combines lower ranks on the left; for a non-commutative operator it
reduces to rank 0 (where rank order and tree order agree) and forwards to the root.
"""

from __future__ import annotations

from mpiml.collectives.workspace import msg

TAG_REDUCE = 41
TAG_BCAST = 42
TAG_FORWARD = 43


def reduce(comm, x, out, op, root, workspace):
    """Binomial-tree reduce of flat ``x``; ``out`` holds the result on ``root``.

    On other ranks ``out`` is used as scratch (it must have ``x``'s size) and its
    contents are undefined afterwards.
    """
    p, r = comm.Get_size(), comm.Get_rank()
    tree_root = root if op.commutative else 0
    vrank = (r - tree_root) % p
    tmp = workspace.get("tree", x.size, x.dtype)
    data = x
    mask = 1
    while mask < p:
        if vrank & mask:
            comm.Send(msg(data), (r - mask) % p, TAG_REDUCE)
            break
        child = vrank + mask
        if child < p:
            comm.Recv(msg(tmp), (r + mask) % p, TAG_REDUCE)
            op(data, tmp, out=out)  # the child covers higher ranks: it goes on the right
            data = out
        mask <<= 1
    if vrank == 0 and data is not out:
        out[...] = data
    if tree_root != root:
        if r == tree_root:
            comm.Send(msg(out), root, TAG_FORWARD)
        elif r == root:
            comm.Recv(msg(out), tree_root, TAG_FORWARD)
    return out


def bcast(comm, buf, root):
    """Binomial-tree broadcast of flat ``buf`` from ``root``, in place."""
    p, r = comm.Get_size(), comm.Get_rank()
    vrank = (r - root) % p
    mask = 1
    while mask < p:
        if vrank & mask:
            comm.Recv(msg(buf), (r - mask) % p, TAG_BCAST)
            break
        mask <<= 1
    mask >>= 1
    while mask:
        if vrank + mask < p:
            comm.Send(msg(buf), (r + mask) % p, TAG_BCAST)
        mask >>= 1
    return buf


def allreduce(comm, x, out, op, workspace):
    """Binomial reduce to rank 0, then binomial broadcast from it."""
    reduce(comm, x, out, op, 0, workspace)
    return bcast(comm, out, 0)
