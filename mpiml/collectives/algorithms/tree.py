"""Binomial trees: reduce to a root, broadcast from a root, and allreduce as both.

log2(p) steps each, but the whole vector travels at every step, so these suit small
messages. The reduce combines lower ranks on the left; for a non-commutative operator it
reduces to rank 0 (where rank order and tree order agree) and forwards to the root.
"""

from __future__ import annotations

from mpiml.collectives import model
from mpiml.collectives.registry import register

TAG_REDUCE = 41
TAG_BCAST = 42
TAG_FORWARD = 43


def reduce_into(transport, x, out, op, root, workspace):
    """Binomial-tree reduce of flat ``x``; ``out`` holds the result on ``root``.

    On other ranks ``out`` is used as scratch (it must have ``x``'s size) and its
    contents are undefined afterwards.
    """
    p, r = transport.size, transport.rank
    tree_root = root if op.commutative else 0
    vrank = (r - tree_root) % p
    tmp = workspace.get("tree", x.size, x.dtype)
    data = x
    mask = 1
    while mask < p:
        if vrank & mask:
            transport.send(data, (r - mask) % p, TAG_REDUCE)
            break
        child = vrank + mask
        if child < p:
            transport.recv(tmp, (r + mask) % p, TAG_REDUCE)
            op(data, tmp, out=out)  # the child covers higher ranks: it goes on the right
            data = out
        mask <<= 1
    if vrank == 0 and data is not out:
        out[...] = data
    if tree_root != root:
        if r == tree_root:
            transport.send(out, root, TAG_FORWARD)
        elif r == root:
            transport.recv(out, tree_root, TAG_FORWARD)
    return out


def _reduce_cost(n, p, r):
    return model.reduce_binomial(n, p, r.step, r.beta, r.gamma)


@register("reduce", "binomial", cost=_reduce_cost)
def reduce(transport, x, out, op, root, workspace):
    """Binomial-tree reduce; ranks other than ``root`` (``out`` None) reduce into scratch."""
    scratch = out if out is not None else workspace.get("reduce_out", x.size, x.dtype)
    reduce_into(transport, x, scratch, op, root, workspace)
    return out


def _bcast_cost(n, p, r):
    return model.bcast_binomial(n, p, r.step, r.beta, r.gamma)


@register("bcast", "binomial", cost=_bcast_cost)
def bcast(transport, buf, root, segment_bytes=None, workspace=None):
    """Binomial-tree broadcast of flat ``buf`` from ``root``, in place."""
    p, r = transport.size, transport.rank
    vrank = (r - root) % p
    mask = 1
    while mask < p:
        if vrank & mask:
            transport.recv(buf, (r - mask) % p, TAG_BCAST)
            break
        mask <<= 1
    mask >>= 1
    while mask:
        if vrank + mask < p:
            transport.send(buf, (r + mask) % p, TAG_BCAST)
        mask >>= 1
    return buf


def _allreduce_cost(n, p, r):
    return model.allreduce_tree(n, p, r.step, r.beta, r.gamma)


@register("allreduce", "tree", cost=_allreduce_cost)
def allreduce(transport, x, out, op, workspace):
    """Binomial reduce to rank 0, then binomial broadcast from it."""
    reduce_into(transport, x, out, op, 0, workspace)
    return bcast(transport, out, 0)
