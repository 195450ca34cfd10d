"""Node-aware reduce_scatter: reduce inside each node, reduce-scatter between nodes, scatter inside.

``reduce_scatter`` ``hierarchical``: each node's leader (its lowest rank) receives the sum of its
node's inputs (the MPI library's reduce), the leaders reduce-scatter those among themselves so
that each gets its node's blocks (the library's reduce_scatter, a node's block being its ranks'
blocks one after another), and each leader scatters the blocks to its ranks. Between nodes each
leader's link carries about ``(nodes - 1) / nodes`` of the vector, where a flat reduce-scatter
sends a block to every remote rank. The grouping by node reorders operands, so the operator must
be commutative. Nodes of interleaved ranks (as ``Split_type`` may give) are handled by putting
the input's blocks in node order first.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpiml.collectives import model, nodes, registry
from mpiml.collectives.layout import displacements
from mpiml.collectives.algorithms.hierarchical import _leader_reduce
from mpiml.collectives.registry import register


def node_order(x, counts, members):
    """``x``'s blocks (``counts[r]`` elements for rank ``r``, in rank order) rearranged node by node."""
    starts = displacements(counts)
    order = [r for m in members for r in m]
    if order == list(range(len(counts))):
        return x
    return np.concatenate([x[starts[r]:starts[r] + counts[r]] for r in order])


def _reduce_scatter(transport, x, out, op, counts, workspace):
    layout = nodes.layout(transport.comm)
    g = layout.grouping
    counts = np.asarray(counts, dtype=np.int64)
    in_order, node_counts, send_sizes, send_starts = layout.local_workspace.plan(
        ("hierarchical_reduce_scatter", x.dtype.itemsize, counts.tobytes()), lambda: _plan(g, counts, x.dtype.itemsize))
    if not in_order:
        x = node_order(x, counts, g.members)
    leader = g.local_rank == 0
    total = x
    if g.local_size > 1:
        # temporaries from the workspace: fresh ones cost a page fault per 4 KiB every call (measured:
        # 6145 a call on a 16 MiB leader)
        total = workspace.get("hierarchical_total", x.size, x.dtype) if leader else None
        _leader_reduce(layout, x, total, op)
    if leader:
        block = total
        if g.nodes > 1:
            block = workspace.get("hierarchical_block", int(node_counts[g.node]), x.dtype)
            registry.table("reduce_scatter")["native"].run(layout.peers_transport, total, block, op, node_counts,
                                                         layout.peers_workspace)
        send = [block, send_sizes, send_starts, MPI.BYTE]
    else:
        send = None
    if g.local_size > 1:
        layout.local.Scatterv(send, [out, out.nbytes, MPI.BYTE], 0)
    else:
        np.copyto(out, block[:out.size])
    return out


def _plan(g, counts, item) -> tuple:
    """What a reduce_scatter of ``counts`` computes before any message: whether the ranks are in node
    order, the node blocks' element counts, this node's ranks' bytes and offsets (the leader's scatter)."""
    order = [r for m in g.members for r in m]
    node_counts = np.array([counts[list(m)].sum() for m in g.members], dtype=np.int64)
    sizes = counts[list(g.members[g.node])] * item
    return order == list(range(len(counts))), node_counts, sizes.tolist(), displacements(sizes)[:-1].tolist()


def _cost(n, p, r):
    """A reduce, a library reduce-scatter and a scatter over all ``p`` ranks on the model's one link."""
    return (model.reduce_library(n, p, r.alpha, r.beta, r.gamma)
            + model.reduce_scatter_library(n, p, r.alpha, r.beta, r.gamma) + r.alpha + n * r.beta)


_reduce_scatter.needs_communicator = True   # runs on MPI sub-communicators, not on any transport
register("reduce_scatter", "hierarchical", _reduce_scatter, cost=_cost, commutative_only=True)
