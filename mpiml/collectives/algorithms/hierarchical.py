"""Node-aware allreduce: reduce inside each node, allreduce between nodes, share inside each node.

The node layout (which ranks share a node, :mod:`mpiml.collectives.nodes`) comes from
``Split_type(COMM_TYPE_SHARED)``, or from ``MPIML_RANKS_PER_NODE`` (emulated nodes of
consecutive ranks). Three algorithms:

``hierarchical``
    the MPI library's reduce to each node's leader, an allreduce among the leaders
    (:func:`between_nodes`: the flat algorithm the model prices fastest there), the
    library's broadcast from each leader: one rank per node crosses the network.
``hierarchical_slices``
    the library's reduce-scatter inside each node into as many slices as the smallest
    node has ranks, an allreduce of slice ``i`` among the ``i``-th ranks of all nodes (so
    every rank's link carries its share, not only the leader's), the library's
    allgather inside each node.
``shared_memory``
    no messages inside a node: every rank writes its input into the node's shared
    window (or nothing, when it is a :func:`mpiml.collectives.nodes.shared_array`), each
    rank reduces its slice of every rank's input in place, in rank order; between nodes,
    slice ``i`` is allreduced among the ``i``-th ranks of all nodes; then every rank
    copies the result out; the ranks hand over through counters in the window, not
    barriers (see :func:`shared_allreduce`); on an emulated node
    whose ranks MPI cannot map into one window (MPI kept off shared memory), the same
    slices with messages (``hierarchical_slices``).

Every element of the result is reduced on one rank and copied to the others, so the
results are bitwise identical on every rank. With one node they are an intra-node
allreduce; with one rank per node, the between-node allreduce alone. The between-node
step (ring, Rabenseifner) and the grouping by node reorder operands, so all three need a
commutative operator.

The registered cost is their steps on the flat model's one uniform link, never cheaper
than a flat algorithm, so ``auto`` without a tuning file does not pick them (a tuning file
from ``mpiml tune`` on the job does, where they measured fastest); name them with
``algorithm=``. :mod:`mpiml.collectives.model_nodes` prices them on a node layout with a
link inside and one between nodes (``mpiml model --nodes``).
"""

from __future__ import annotations

import itertools

import numpy as np

from mpiml.collectives import model, nodes, registry
from mpiml.collectives.registry import register
from mpiml.runtime.jit import compiled, kernel

# The flat algorithms the between-node step chooses from (never a node-aware one: no recursion).
FLAT = ("native", "ring", "recursive_doubling", "rabenseifner")
# The reduce to a node's leader: the library's, or the binomial tree where the library is slower (MPICH's
# reduce of 16 MiB at p=2 took 17-20 ms here, where its reduce_scatter took 3.5 ms).
INSIDE_REDUCE = ("native", "binomial")


def between_nodes(nbytes: int, nodes_count: int, params=None) -> str:
    """The flat allreduce algorithm ``auto``'s rule picks for ``nbytes`` among ``nodes_count`` ranks, one per
    node: the fastest on ``params``' between-node link (``alpha``/``beta``; None: the defaults; the algorithm
    passes the tuning in force), ``native`` unless beaten by ``select.NATIVE_MARGIN``."""
    from mpiml.collectives.select import margin_pick

    names = [name for name in FLAT if name in registry.table("allreduce")]
    return margin_pick({name: model.predict(name, nbytes, nodes_count, params, collective="allreduce")
                        for name in names})


def node_reduce(nbytes: int, local_size: int, params=None) -> str:
    """The reduce algorithm a node's ``local_size`` ranks run to their leader: the fastest of
    :data:`INSIDE_REDUCE` on ``params``' link inside a node (None: the defaults; the algorithms pass the
    tuning in force, whose fitted extras price the library's reduce), ``native`` unless beaten by
    ``select.NATIVE_MARGIN``."""
    from mpiml.collectives.model_nodes import link_params
    from mpiml.collectives.select import margin_pick

    inside = link_params(params or model.DEFAULT_PARAMS, (local_size,))
    return margin_pick({name: model.predict(name, nbytes, local_size, inside, collective="reduce")
                        for name in INSIDE_REDUCE})


def _tuned_params():
    """The parameters of the tuning ``auto`` uses now, or None."""
    from mpiml.collectives.select import current_tuning

    tuning = current_tuning()
    return tuning.params if tuning is not None else None


_tokens: dict = {}   # id(params) -> (params, token): kept here, those parameters alone have that id
_next_token = itertools.count(1)


def params_token(params) -> int:
    """A number that names ``params`` (None: 0) and never other parameters, even after these are gone: a kept
    pick's key. (``id()`` alone can name a later tuning's parameters allocated where freed ones were, and the
    parameters hold dicts, so they cannot be a key themselves.)"""
    if params is None:
        return 0
    found = _tokens.get(id(params))
    if found is not None and found[0] is params:
        return found[1]
    if len(_tokens) > 64:   # (parameters named again after this get new tokens: their picks are made again)
        _tokens.clear()
    token = next(_next_token)
    _tokens[id(params)] = (params, token)
    return token


def _leader_reduce(layout, x, out, op):
    """Reduce ``x`` into ``out`` on the node's leader (``out`` None elsewhere), with :func:`node_reduce`'s pick."""
    params, local_ws = _tuned_params(), layout.local_workspace
    name = local_ws.plan(("node_reduce", x.nbytes, layout.grouping.local_size, params_token(params)),
                         lambda: node_reduce(x.nbytes, layout.grouping.local_size, params))
    registry.table("reduce")[name].run(layout.local_transport, x, out, op, 0, local_ws)


def _peer_allreduce(layout, buf, op, out=None):
    """Allreduce ``buf`` among this rank's peers (same node rank, every node), in place or into ``out``."""
    transport = layout.peers_transport
    out = buf if out is None else out
    if transport.size > 1 and buf.size:
        # Between nodes is the network: the pick follows the tuning's link, made again when the tuning changes.
        params, workspace = _tuned_params(), layout.peers_workspace
        name = workspace.plan(("between_nodes", buf.nbytes, transport.size, params_token(params)),
                              lambda: between_nodes(buf.nbytes, transport.size, params))
        registry.table("allreduce")[name].run(transport, buf, out, op, workspace)
    elif out is not buf:
        np.copyto(out, buf)


def _alone_on_node(layout, x, out, op):
    """A rank alone on its node: the between-node allreduce is the whole call. Where every node has one
    rank it runs out of place if the call does (no copy first; an in-place exchange sends what this core
    just wrote, which the peer's core then reads: at p=2, 64 KiB, a copy and an in-place recursive doubling
    took 47 us, out of place 26); beside larger nodes, whose leaders reduce in place, it copies and runs in
    place too, as the flat algorithms' partners must be in the same case to compute the same bits."""
    if max(map(len, layout.grouping.members)) == 1:
        _peer_allreduce(layout, x, op, out)
        return out
    if out is not x:
        np.copyto(out, x)
    _peer_allreduce(layout, out, op)
    return out


def _hierarchical(transport, x, out, op, workspace):
    layout = nodes.layout(transport.comm)
    g = layout.grouping
    local, local_ws = layout.local_transport, layout.local_workspace
    if g.local_size == 1:
        return _alone_on_node(layout, x, out, op)
    leader = g.local_rank == 0
    _leader_reduce(layout, x, out if leader else None, op)
    if leader:
        _peer_allreduce(layout, out, op)
    registry.table("bcast")["native"].run(local, out, 0, None, local_ws)
    return out


def _slices(transport, x, out, op, workspace):
    return _slices_on(nodes.layout(transport.comm), x, out, op)


def _slices_on(layout, x, out, op):
    """``hierarchical_slices`` on ``layout``."""
    g = layout.grouping
    local, local_ws = layout.local_transport, layout.local_workspace

    def build():
        bounds = nodes.slice_bounds(x.size, g.slices)
        counts = np.zeros(g.local_size, dtype=np.int64)
        counts[:g.slices] = np.diff(bounds)
        return counts, bounds

    if g.local_size == 1:
        return _alone_on_node(layout, x, out, op)
    counts, bounds = local_ws.plan(("hierarchical_slices", x.size, g.local_size, g.slices), build)
    j = g.local_rank
    block = local_ws.get("hierarchical_slice", int(counts[j]), x.dtype)
    registry.table("reduce_scatter")["native"].run(local, x, block, op, counts, local_ws)
    if j < g.slices:
        _peer_allreduce(layout, block, op)
    registry.table("allgather")["native"].run(local, block, out, counts, local_ws)
    return out


# Chunks of a slice in the shared-memory pipeline (inputs of chunk k published, reduced and copied
# out while still in cache). Off: on a shared 2-core host every chunk size from 64 KiB to 4 MiB
# measured slower than whole slices (each hand-off can wait for a descheduled peer); e.g. 1 << 20
# turns it on.
CHUNK_BYTES = 1 << 62


def chunk_count(slice_elements: int, itemsize: int, nodes_count: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many chunks ``shared_allreduce`` cuts every rank's slice into: one between nodes (each
    slice crosses the network whole), else enough to keep a chunk within ``chunk_bytes``."""
    if nodes_count > 1 or slice_elements * itemsize <= chunk_bytes:
        return 1
    return -(-slice_elements * itemsize // chunk_bytes)


def shared_plan(n: int, slices: int, local_size: int, chunks: int) -> list:
    """Per node rank, the element bounds of its slice's ``chunks`` chunks (``chunks + 1`` numbers;
    a rank beyond ``slices`` owns none: ``[n] * (chunks + 1)``)."""
    bounds = nodes.slice_bounds(n, slices)
    plan = []
    for r in range(local_size):
        if r < slices:
            lo, hi = bounds[r], bounds[r + 1]
            plan.append([lo + b for b in nodes.slice_bounds(hi - lo, chunks)])
        else:
            plan.append([n] * (chunks + 1))
    return plan


def shared_allreduce(layout, x, out, op):
    """Allreduce through the node's shared window, ``x`` and ``out`` flat (``out`` may be ``x``).

    Node rank ``j < slices`` owns slice ``j`` (numpy.array_split order), cut into chunks
    (:func:`chunk_count`). Chunk by chunk, every rank publishes its input's pieces of the
    other owners' chunks in its segment of the window (nothing when its input is a
    :func:`mpiml.collectives.nodes.shared_array`, read in place; a byte in its header says
    which) and raises its POSTED counter; an owner waits for every rank's counter, reduces
    its chunk of every rank's input in rank order into its own segment, allreduces it
    between nodes (one chunk then), copies it into ``out`` and raises its DONE counter; the
    previous chunk of every other owner is copied out once its DONE counter says so (with
    chunks, chunk k is reduced while the peers publish k + 1; by default a slice is one chunk).

    Copied per rank at two ranks: 1.5 n bytes, or n with inputs in shared arrays (the memory
    roof: what reading every input in place costs). No barriers: counters in the window
    (monotonic over calls, so never reset), each store after and each read before a
    Win_sync. Every call reuses the same areas: a rank leaves a call only after every other
    owner's last DONE (so nobody reads its published inputs, or its input in a shared array,
    any more: the caller may change it), and an owner writes a result only after every
    rank's POSTED of that call (so everybody has copied the previous call's results out).
    """
    g = layout.grouping
    if g.local_size == 1:
        return _alone_on_node(layout, x, out, op)
    if not layout.shares_memory:  # an emulated node MPI cannot map into one window: messages instead
        return _slices_on(layout, x, out, op)
    (views, results), headers, counters = layout.shared(x.size, x.dtype)
    j, size = g.local_rank, g.local_size

    def build():
        chunks = chunk_count(-(-x.size // g.slices), x.itemsize, g.nodes, CHUNK_BYTES)
        return (chunks, shared_plan(x.size, g.slices, size, chunks), [r for r in range(size) if r != j],
                [r for r in range(min(g.slices, size)) if r != j])

    chunks, plan, others, other_owners = layout.local_workspace.plan(
        ("shared_memory", x.size, x.itemsize, CHUNK_BYTES), build)   # the layout fixes the rest
    where = layout.input_window(x)   # 0: copied into the window here; k: in input window k - 1
    headers[j][0] = where
    mine, base = views[j], layout.ticket
    layout.ticket += chunks
    owner = j < g.slices
    inputs, result = None, results[j]
    for k in range(chunks):
        if not where:
            for r in other_owners:
                a, b = plan[r][k], plan[r][k + 1]
                np.copyto(mine[a:b], x[a:b])
        layout.post(counters, nodes.POSTED, base + k + 1)
        if owner:
            layout.wait(counters, nodes.POSTED, others, base + k + 1)
            if inputs is None:
                inputs = [x if r == j else _input(layout, r, headers, views, x) for r in range(size)]
            a, b = plan[j][k], plan[j][k + 1]
            if b > a:
                reduce_and_copy([part[a:b] for part in inputs], op, result[a:b], out[a:b], g.nodes == 1,
                                lambda acc: _peer_allreduce(layout, acc, op))
            layout.post(counters, nodes.DONE, base + k + 1)
        if k:
            _copy_out(layout, counters, results, plan, other_owners, k - 1, base, out)
    _copy_out(layout, counters, results, plan, other_owners, chunks - 1, base, out)
    return out


def _copy_out(layout, counters, results, plan, owners, k, base, out):
    """Chunk ``k`` of every other owner's slice into ``out`` once its DONE counter says it is there."""
    layout.wait(counters, nodes.DONE, owners, base + k + 1)
    for r in owners:
        a, b = plan[r][k], plan[r][k + 1]
        np.copyto(out[a:b], results[r][a:b])


def _input(layout, rank, headers, views, x):
    """Node rank ``rank``'s input of this call: in the window's inputs area, or in its input window."""
    where = int(headers[rank][0])
    if not where:
        return views[rank]
    return layout.inputs[where - 1].segments[rank][:x.nbytes].view(x.dtype)


# From this many bytes a slice's reduction and its copy into ``out`` are one compiled pass (one
# process: 13% faster at 2 MiB, 40% at 32 MiB, no gain at 512 KiB; small calls never compile it).
FUSE_BYTES = 1 << 20


def reduce_and_copy(parts, op, result, out, fuse=True, between=None):
    """``result = out = parts[0] op ... op parts[-1]`` (rank order; ``result`` in the window, so never
    an operand; ``out`` may be one), with ``between(result)`` (the between-node allreduce) before
    the copy to ``out``. A sum of float32/float64 of :data:`FUSE_BYTES` or more with nothing between
    is one compiled pass writing both (:func:`_sum_twice`); otherwise the numpy reference below."""
    if (fuse and result.nbytes >= FUSE_BYTES and getattr(op, "func", op) is np.add and result.dtype in _FUSED
            and all(part.dtype == result.dtype for part in parts) and compiled()):
        _sum_twice(tuple(parts), result, out)
        return out
    # Into the window's result area, never into ``out``: in place, ``out`` is an operand still to read.
    reduce_in_rank_order(parts, op, result)
    if between is not None:
        between(result)
    np.copyto(out, result)
    return out


_FUSED = (np.dtype(np.float32), np.dtype(np.float64))


@kernel
def _sum_twice(parts, result, out):
    """Per element, the parts summed left to right (each sum rounded to the dtype, as numpy's
    successive ``np.add`` passes do), stored in ``result`` and ``out``."""
    for i in range(result.size):
        value = parts[0][i] + parts[1][i]
        for q in range(2, len(parts)):
            value = value + parts[q][i]
        result[i] = value
        out[i] = value


def reduce_in_rank_order(parts, op, out):
    """``out = parts[0] op parts[1] op ... op parts[-1]``, left to right (at least two parts;
    ``out`` may be ``parts[0]``): the same arithmetic whichever rank computes it."""
    op(parts[0], parts[1], out=out)
    for part in parts[2:]:
        op(out, part, out=out)
    return out


def _shared_memory(transport, x, out, op, workspace):
    return shared_allreduce(nodes.layout(transport.comm), x, out, op)


def _uniform_link_cost(n, p, r):
    """A reduce and a broadcast over all ``p`` ranks on the model's one link (see the module docstring)."""
    return (2 * r.step + model.reduce_library(n, p, r.alpha, r.beta, r.gamma)
            + model.bcast_library(n, p, r.alpha, r.beta, r.gamma))


for _name, _run in (("hierarchical", _hierarchical), ("hierarchical_slices", _slices),
                    ("shared_memory", _shared_memory)):
    _run.needs_communicator = True  # runs on MPI sub-communicators, not on any transport
    register("allreduce", _name, _run, cost=_uniform_link_cost, commutative_only=True)
