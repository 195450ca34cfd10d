"""Node-aware bcast and allgather: one copy of the data crosses between nodes, per node.

The node layout is :mod:`mpiml.collectives.nodes`' (``Split_type(COMM_TYPE_SHARED)``, or
emulated with ``MPIML_RANKS_PER_NODE``). Flat algorithms send a node's data to every
rank of every other node, so the network carries it once per remote rank; these send it
once per remote node and copy it inside the node:

``bcast`` ``hierarchical``
    the root hands the buffer to its node's leader (its lowest rank), the leaders
    broadcast it among themselves (the MPI library's bcast), each leader broadcasts it
    inside its node.
``allgather`` ``hierarchical``
    each node's leader gathers its ranks' pieces, the leaders allgather the node blocks
    among themselves, each leader puts the pieces in rank order and broadcasts the result
    inside its node.

Nothing is reduced, so the results are the inputs' bits on every rank. On the flat model's
one uniform link these cost a step more than a flat algorithm (``auto`` without a tuning
file does not pick them; :mod:`mpiml.collectives.model_nodes` prices them on a node
layout); name them with ``algorithm="hierarchical"`` on a multi-node job.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpiml.collectives import model, nodes
from mpiml.collectives.layout import displacements
from mpiml.collectives.registry import register

TAG = 0x6863   # the root's hand-over to its leader, on the node's private communicator


def _bytes(array) -> list:
    return [array, array.nbytes, MPI.BYTE]


def _bcast(transport, buf, root, segment_bytes, workspace):
    layout = nodes.layout(transport.comm)
    g = layout.grouping
    node = next(k for k, members in enumerate(g.members) if root in members)
    members = g.members[node]
    if root != members[0] and g.node == node:
        if transport.rank == root:
            layout.local.Send(_bytes(buf), 0, TAG)
        elif g.local_rank == 0:
            layout.local.Recv(_bytes(buf), members.index(root), TAG)
    if g.local_rank == 0 and g.nodes > 1:
        layout.peers.Bcast(_bytes(buf), node)   # the leaders, in node order
    if g.local_size > 1:
        layout.local.Bcast(_bytes(buf), 0)
    return buf


def _allgather(transport, local, out, counts, workspace):
    layout = nodes.layout(transport.comm)
    g = layout.grouping
    counts = np.asarray(counts, dtype=np.int64)
    item = local.dtype.itemsize
    order, in_rank_order, node_counts, node_starts, mine, mine_starts = layout.local_workspace.plan(
        ("hierarchical_allgather", item, counts.tobytes()), lambda: _allgather_plan(g, counts, item, transport.size))
    if g.local_rank == 0:
        gathered = out.view(np.uint8) if in_rank_order else workspace.get("hierarchical_gathered", sum(node_counts),
                                                                           np.uint8)
        if g.local_size > 1:   # the node's pieces straight into its block's place: no temporary, no copy
            at = node_starts[g.node]
            layout.local.Gatherv([local, local.nbytes, MPI.BYTE],
                                 [gathered[at:at + node_counts[g.node]], mine, mine_starts, MPI.BYTE], 0)
            if g.nodes > 1:
                layout.peers.Allgatherv(MPI.IN_PLACE, [gathered, node_counts, node_starts, MPI.BYTE])
        else:   # a node of one rank: its block is its input
            layout.peers.Allgatherv([local, local.nbytes, MPI.BYTE], [gathered, node_counts, node_starts, MPI.BYTE])
        if not in_rank_order:  # nodes of interleaved ranks: each piece to its rank's place
            to_rank_order(gathered, out.view(np.uint8), order, counts * item)
    else:
        layout.local.Gatherv([local, local.nbytes, MPI.BYTE], None, 0)
    if g.local_size > 1:
        layout.local.Bcast([out, out.nbytes, MPI.BYTE], 0)
    return out


def _allgather_plan(g, counts, item, size) -> tuple:
    """What an allgather of ``counts`` elements of ``item`` bytes per rank computes before any message:
    the ranks in node order, whether that is rank order, the node blocks' bytes and offsets, this node's
    pieces' bytes and offsets."""
    order = [r for members in g.members for r in members]        # node blocks, concatenated
    node_counts = [int(counts[list(m)].sum()) * item for m in g.members]
    mine = [int(counts[r]) * item for r in g.members[g.node]]
    return order, order == list(range(size)), node_counts, _starts(node_counts), mine, _starts(mine)


def to_rank_order(gathered, result, order, sizes) -> None:
    """Copy the pieces of ``gathered`` (those of ranks ``order``, in that order, ``sizes[r]`` each)
    into ``result`` in rank order."""
    starts, at = _starts(sizes), 0
    for r in order:
        result[starts[r]:starts[r] + sizes[r]] = gathered[at:at + sizes[r]]
        at += int(sizes[r])


def _starts(sizes) -> list:
    """Offsets of consecutive parts of ``sizes``."""
    return displacements(sizes)[:-1].tolist()


def _bcast_cost(n, p, r):
    """A hand-over and two library broadcasts over all ``p`` ranks on the model's one link."""
    return r.alpha + n * r.beta + 2 * model.bcast_library(n, p, r.alpha, r.beta, r.gamma)


def _allgather_cost(n, p, r):
    """A gather, a library allgather and a broadcast over all ``p`` ranks on the model's one link."""
    return (model.allgather_library(n, p, r.alpha, r.beta, r.gamma) * 2
            + model.bcast_library(n, p, r.alpha, r.beta, r.gamma))


_bcast.needs_communicator = True   # runs on MPI sub-communicators, not on any transport
_allgather.needs_communicator = True
register("bcast", "hierarchical", _bcast, cost=_bcast_cost)
register("allgather", "hierarchical", _allgather, cost=_allgather_cost)
