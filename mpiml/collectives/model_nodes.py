"""Cost model of the node-aware collectives on a node layout (pure functions).

The flat model (:mod:`mpiml.collectives.model`) prices every algorithm on one uniform link.
The node-aware algorithms (:mod:`mpiml.collectives.algorithms.hierarchical`,
``hierarchical_copy``, ``hierarchical_scatter``) are sequences of MPI library calls on a
node's ranks and on the ranks of equal node rank across nodes, plus local copies and
reductions; each is priced here as exactly those steps, on the link it runs over:

* inside a node: ``intra_alpha``/``intra_beta`` (``alpha``/``beta`` where the parameters
  have none: one link), the same ``gamma``, ``copy``, ``step_overhead`` and the library's
  fitted ``native_extra`` as the flat model;
* between nodes: ``alpha``/``beta`` (``mpiml tune`` stores the between-node link there when
  the job spans several nodes).

A layout is the tuple of the nodes' rank counts (``sizes``), e.g. ``(2, 2)`` or, for
``MPIML_RANKS_PER_NODE=2`` at 3 ranks, ``(2, 1)`` (:func:`node_sizes`). Steps that every
node does at once are priced by the slowest node (the next step waits for it): a node of
one rank copies where the others reduce. Nodes are taken as consecutive ranks (as
emulated nodes are; ``Split_type`` usually gives the same), so the node-aware allgather
and reduce_scatter need no reordering copy.

Assumptions beyond the flat model's:

* Concurrent between-node transfers of one node (the slices of ``hierarchical_slices``
  and ``shared_memory``) do not slow each other: each rank's link runs at ``beta``. On a
  node whose ranks share one network link that saturates, they share its rate, and the
  slices are priced too fast.
* The MPI library's uneven reduce-scatter and allgather inside a node (``hierarchical_slices``
  on nodes of unequal size, where the smallest node sets fewer slices than a node has
  ranks) are priced as a pairwise exchange: the busiest rank receives every other rank's
  copy of its block, or the whole vector.
* Between nodes of unequal size the library's allgather and reduce-scatter are priced as on
  equal nodes, plus the bytes by which the busiest leader's share exceeds ``(N-1)/N`` of the
  vector.
* A barrier costs one Python step and ``ceil(log2 K)`` latencies; the reductions inside a
  shared window read other ranks' inputs at the measured ``gamma`` (all ranks at once).
* No oversubscription: on a node whose ranks outnumber its cores, a waiting rank holds a
  core the others need, and every step can cost a scheduler slice; predictions there
  are not meant to hold.
"""

from __future__ import annotations

from mpiml.collectives import model, registry

# The node-aware algorithms this module prices, per collective.
NODE_AWARE = {
    "allreduce": ("hierarchical", "hierarchical_slices", "shared_memory"),
    "bcast": ("hierarchical",),
    "allgather": ("hierarchical",),
    "reduce_scatter": ("hierarchical",),
}


def node_sizes(p: int, ranks_per_node: int) -> tuple:
    """The rank counts of the nodes of ``p`` ranks grouped ``ranks_per_node`` at a time (the last smaller),
    as ``MPIML_RANKS_PER_NODE`` groups them."""
    if p < 1 or ranks_per_node < 1:
        raise ValueError(f"need p >= 1 and ranks_per_node >= 1, got {p}, {ranks_per_node}")
    full, rest = divmod(int(p), int(ranks_per_node))
    return (int(ranks_per_node),) * full + ((rest,) if rest else ())


def _check(sizes) -> tuple:
    sizes = tuple(int(k) for k in sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"need at least one node of at least one rank, got {sizes}")
    return sizes


def intra_link(params: model.ModelParams) -> tuple:
    """``(alpha, beta)`` inside a node."""
    alpha = params.alpha if params.intra_alpha is None else params.intra_alpha
    beta = params.beta if params.intra_beta is None else params.intra_beta
    return float(alpha), float(beta)


def inter_link(params: model.ModelParams) -> tuple:
    """``(alpha, beta)`` between nodes."""
    return float(params.alpha), float(params.beta)


def link_params(params: model.ModelParams, sizes) -> model.ModelParams:
    """The parameters a flat algorithm sees on this layout: the intra-node link on one node, else the
    between-node one (the slowest link of the job)."""
    if len(_check(sizes)) > 1:
        return params
    alpha, beta = intra_link(params)
    return model.ModelParams.from_dict(dict(params.to_dict(), alpha=alpha, beta=beta))


def _rates(params, link, gamma, in_place=False) -> model.Rates:
    alpha, beta = link
    return model.Rates(alpha, alpha + params.step_overhead, beta, gamma, params.copy, bool(in_place), params)


def _algorithm(collective, name, n, p, rates) -> float:
    """A registered algorithm's cost (the call's steps beyond ``call_overhead``) at ``p`` ranks; 0 alone."""
    return registry.table(collective)[name].cost(float(n), int(p), rates) if p > 1 else 0.0


def between_nodes(nbytes, nodes, params, gamma, in_place=True) -> float:
    """The allreduce (in place unless told) of ``nbytes`` among ``nodes`` ranks, one per node, with the flat
    algorithm the implementation picks there on these parameters
    (:func:`mpiml.collectives.algorithms.hierarchical.between_nodes`, which picks on the tuning in force:
    the same parameters when these are that tuning's)."""
    if nodes < 2 or nbytes <= 0:
        return 0.0
    from mpiml.collectives.algorithms.hierarchical import between_nodes as pick

    name = pick(int(nbytes), int(nodes), params)
    return _algorithm("allreduce", name, nbytes, nodes, _rates(params, inter_link(params), gamma, in_place=in_place))


def _node_reduce(n, k, params) -> str:
    """The reduce to a node's leader the implementation runs on these parameters
    (:func:`mpiml.collectives.algorithms.hierarchical.node_reduce`)."""
    from mpiml.collectives.algorithms.hierarchical import node_reduce

    return node_reduce(int(n), int(k), params) if k > 1 else "native"


def barrier(k, params) -> float:
    """A node barrier of ``k`` ranks (with the windows' synchronisation)."""
    return params.step_overhead + model.log2_ceil(k) * intra_link(params)[0] if k > 1 else 0.0


def _uneven_reduce_scatter(n, k, slices, r) -> float:
    """The library's reduce-scatter of ``n`` bytes among ``k`` ranks of which the first ``slices`` get a block."""
    if slices >= k:
        return _algorithm("reduce_scatter", "native", n, k, r)
    block = n / slices
    moved = max((k - 1) * block * (r.beta + r.gamma), n * r.beta)
    return model.with_native_extra(r.params.step_overhead + (k - 1) * r.alpha + moved, r.params, "reduce_scatter", n)


def _uneven_allgather(n, k, slices, r) -> float:
    """The library's allgather of ``n`` bytes among ``k`` ranks of which the first ``slices`` hold a block."""
    if slices >= k:
        return _algorithm("allgather", "native", n, k, r)
    return model.with_native_extra(r.params.step_overhead + (k - 1) * r.alpha + n * r.beta, r.params, "allgather", n)


def fresh_bcast(n, k, rates) -> float:
    """The library's bcast of ``n`` bytes among ``k`` ranks of a node when the root has just written them (the
    result of a reduce or a gather): no faster than the link carries them. The library's fitted extras come
    from bcasts of unchanged data, which the other ranks' caches still hold from the last call (measured at
    p=2: a gather then a bcast of 64 KiB-1 MiB took 1.7-2.0x the two timed apart)."""
    if k < 2:
        return 0.0
    return max(_algorithm("bcast", "native", n, k, rates), rates.step + n * rates.beta)


def allreduce_hierarchical(n, sizes, params, gamma, in_place=False) -> float:
    """The reduce to each node's leader (the library's or the binomial tree's, as the implementation picks),
    the leaders' allreduce, the library's bcast inside each node."""
    if max(sizes) == 1:
        return _alone(n, sizes, params, gamma, in_place)
    intra = _rates(params, intra_link(params), gamma, in_place)
    plain = _rates(params, intra_link(params), 0.0)
    reduce = max(_algorithm("reduce", _node_reduce(n, k, params), n, k, intra) if k > 1
                 else (0.0 if in_place else n * params.copy) for k in sizes)
    share = max(fresh_bcast(n, k, plain) for k in sizes)
    return reduce + between_nodes(n, len(sizes), params, gamma) + share


def _alone(n, sizes, params, gamma, in_place) -> float:
    """Every node of one rank: the between-node allreduce of the whole vector, into ``out`` (no copy first)."""
    return between_nodes(n, len(sizes), params, gamma, in_place)


def allreduce_slices(n, sizes, params, gamma, in_place=False) -> float:
    """The library's reduce-scatter into ``min(sizes)`` slices inside each node, each slice allreduced among
    the ranks of its node rank, the library's allgather inside each node."""
    if max(sizes) == 1:
        return _alone(n, sizes, params, gamma, in_place)
    slices = min(sizes)
    intra = _rates(params, intra_link(params), gamma)
    plain = _rates(params, intra_link(params), 0.0)
    scatter = max(_uneven_reduce_scatter(n, k, slices, intra) if k > 1 else (0.0 if in_place else n * params.copy)
                  for k in sizes)
    gather = max(_uneven_allgather(n, k, slices, plain) for k in sizes if k > 1) if max(sizes) > 1 else 0.0
    return scatter + between_nodes(n / slices, len(sizes), params, gamma) + gather


def allreduce_shared(n, sizes, params, gamma, in_place=False, shares_memory=True) -> float:
    """Each node's shared window: inputs copied in (but a rank's own slice), each slice reduced in place in
    rank order, allreduced between nodes, the result copied out. Two waits on flags in the window (each
    rank's counter read by the others: a Python step and one latency, whatever the node's size). What a
    rank reads of another rank's writes is priced at no less than the node's link per byte."""
    if max(sizes) == 1:
        return _alone(n, sizes, params, gamma, in_place)
    if not shares_memory:
        return allreduce_slices(n, sizes, params, gamma, in_place)
    slices, c = min(sizes), params.copy
    block = n / slices
    # a rank beyond the slices (a larger node than the smallest) copies all of its input in and the result out
    rest = max(n if k > slices else n - block for k in sizes if k > 1)
    # Bytes another rank wrote (its inputs, read by the reduction; its result blocks, copied out) come from
    # that rank's core: no faster than the node's link, whose per-byte time the ping-pong measured at this size
    # (measured at p=2, 1 MiB: priced at the local copy and add rates, 0.06 ms, where the call took 0.10 ms).
    link = intra_link(params)[1]
    reduce = max((k - 1) * block * max(gamma, link) for k in sizes)
    alone = 0.0 if in_place or min(sizes) > 1 else n * c   # a node of one rank copies x into out
    wait = params.step_overhead + intra_link(params)[0]
    return (max(rest * c, alone) + wait + reduce + between_nodes(block, len(sizes), params, gamma)
            + block * c + wait + rest * max(c, link))


def bcast_hierarchical(n, sizes, params, root_is_leader=True) -> float:
    """The root's hand-over to its leader, the leaders' library bcast, the library's bcast inside each node."""
    intra, inter = _rates(params, intra_link(params), 0.0), _rates(params, inter_link(params), 0.0)
    hand = 0.0 if root_is_leader else intra.step + n * intra.beta
    return (hand + _algorithm("bcast", "native", n, len(sizes), inter)
            + max(_algorithm("bcast", "native", n, k, intra) for k in sizes))


def allgather_hierarchical(n, sizes, params) -> float:
    """``n``: the whole output. Each leader's library gather of its node's pieces into its block's place in
    the output (a node of one rank sends its input as it is), the leaders' library allgather of the node
    blocks in place, the library's bcast of the result inside each node."""
    p, intra, inter = sum(sizes), _rates(params, intra_link(params), 0.0), _rates(params, inter_link(params), 0.0)
    gather = max(params.step_overhead + (k - 1) * intra.alpha + (k - 1) * n / p * intra.beta if k > 1 else 0.0
                 for k in sizes)
    nodes = len(sizes)
    between = 0.0
    if nodes > 1:   # uneven nodes: the leader of the smallest receives more than (nodes - 1) / nodes of it
        between = (_algorithm("allgather", "native", n, nodes, inter)
                   + max(0.0, n - n * min(sizes) / p - (nodes - 1) / nodes * n) * inter.beta)
    return gather + between + max(fresh_bcast(n, k, intra) for k in sizes)


def reduce_scatter_hierarchical(n, sizes, params, gamma) -> float:
    """``n``: the whole input. The reduce to each leader (as in :func:`allreduce_hierarchical`), the leaders'
    library reduce-scatter of node blocks, each leader's library scatter of its ranks' blocks. The
    temporaries are the workspace's, kept between calls (no pages faulted in per call); the library's own
    are in its fitted extras."""
    p, nodes = sum(sizes), len(sizes)
    intra, inter = _rates(params, intra_link(params), gamma), _rates(params, inter_link(params), gamma)
    reduce = max(_algorithm("reduce", _node_reduce(n, k, params), n, k, intra) for k in sizes)
    # uneven nodes: the leader of the largest receives and reduces more than (nodes - 1) / nodes of it
    between = (_algorithm("reduce_scatter", "native", n, nodes, inter)
               + max(0.0, (nodes - 1) * n * max(sizes) / p - (nodes - 1) / nodes * n) * (inter.beta + inter.gamma))
    scatter = max(params.step_overhead + (k - 1) * intra.alpha + (k - 1) * n / p * intra.beta if k > 1
                  else n / p * params.copy for k in sizes)
    return reduce + between + scatter


def predict_nodes(algorithm: str, nbytes: int, sizes, params: model.ModelParams | None = None, *,
                  collective: str = "allreduce", dtype=None, in_place: bool = False,
                  shares_memory: bool = True) -> float:
    """Predicted seconds of one ``mpiml`` call of ``algorithm`` on ``nbytes`` over nodes of ``sizes`` ranks.

    Parameters
    ----------
    algorithm : str
        A node-aware algorithm (:data:`NODE_AWARE`) or any flat one (priced by
        :func:`mpiml.collectives.model.predict` on :func:`link_params`).
    nbytes : int
        The whole vector (allgather: the whole output), as ``mpiml bench`` counts it.
    sizes : sequence of int
        Each node's rank count, in rank order (:func:`node_sizes` for emulated nodes).
    params : ModelParams, optional
        Defaults to :data:`mpiml.collectives.model.DEFAULT_PARAMS`.
    collective, dtype, in_place
        As :func:`mpiml.collectives.model.predict`.
    shares_memory : bool
        Whether a node's ranks can map one shared window (else ``shared_memory`` sends messages).

    Returns
    -------
    float
        Seconds, ``call_overhead`` included.
    """
    params = model.at_size(params or model.DEFAULT_PARAMS, nbytes)
    sizes = _check(sizes)
    p = sum(sizes)
    if algorithm not in NODE_AWARE.get(collective, ()) or p == 1:
        return model.predict(algorithm, nbytes, p, link_params(params, sizes), collective=collective, dtype=dtype,
                             in_place=in_place)
    n = float(nbytes)
    gamma = params.gamma_for(dtype)
    if collective == "allreduce":
        cost = {"hierarchical": allreduce_hierarchical, "hierarchical_slices": allreduce_slices,
                "shared_memory": allreduce_shared}[algorithm]
        extra = {"shares_memory": shares_memory} if algorithm == "shared_memory" else {}
        seconds = cost(n, sizes, params, gamma, in_place, **extra)
    elif collective == "bcast":
        seconds = bcast_hierarchical(n, sizes, params)
    elif collective == "allgather":
        seconds = allgather_hierarchical(n, sizes, params)
    else:
        seconds = reduce_scatter_hierarchical(n, sizes, params, gamma)
    return params.call_overhead + seconds


def candidates(collective: str, sizes, commutative: bool = True) -> tuple:
    """The algorithms priced on a layout: the registered flat ones (that run at its rank count) and,
    on more than one rank, the node-aware ones (those a non-commutative operator allows: ``auto``'s)."""
    from mpiml.collectives.select import candidates as flat

    sizes = _check(sizes)
    aware = NODE_AWARE.get(collective, ())
    allowed = flat(collective, commutative, size=sum(sizes))
    names = [name for name in allowed if name not in aware]
    return tuple(names) + (tuple(name for name in aware if name in allowed) if sum(sizes) > 1 else ())


def predictions(collective: str, nbytes: int, sizes, params=None, **kwargs) -> dict:
    """``{algorithm: seconds}`` for every candidate on the layout."""
    return {name: predict_nodes(name, nbytes, sizes, params, collective=collective, **kwargs)
            for name in candidates(collective, sizes)}


def best_nodes(collective: str, nbytes: int, sizes, params=None, **kwargs) -> str:
    """The algorithm predicted fastest on the layout (ties go to the earlier candidate)."""
    return model.fastest(predictions(collective, nbytes, sizes, params, **kwargs))


def winner(collective: str, nbytes: int, sizes, params=None, *, commutative: bool = True,
           shares_memory: bool = True) -> str:
    """``auto``'s rule on a layout (:mod:`mpiml.collectives.select`, rule 3): the fastest prediction,
    ``native`` kept unless beaten by :data:`mpiml.collectives.select.NATIVE_MARGIN`."""
    from mpiml.collectives.select import margin_pick

    return margin_pick({name: predict_nodes(name, nbytes, sizes, params, collective=collective,
                                            shares_memory=shares_memory)
                        for name in candidates(collective, sizes, commutative)})


__all__ = ["NODE_AWARE", "node_sizes", "intra_link", "inter_link", "link_params", "predict_nodes", "candidates",
           "predictions", "best_nodes", "winner", "between_nodes", "barrier"]
