"""Partitioned factors: each rank stores only its user block's and its item block's rows.

With ``factors="replicated"`` every rank holds the full ``P`` (users x width) and ``Q``
(items x width) and each ALS half-step allgathers the solved side, so memory and traffic
per rank grow with users + items at any rank count. With ``factors="partitioned"`` rank
``r`` keeps rows ``user_bounds[r]:user_bounds[r+1]`` of ``P`` and
``item_bounds[r]:item_bounds[r+1]`` of ``Q`` (the blocks the estimator balances anyway), and:

- **ALS / implicit ALS**: the user half-step receives exactly the item rows its users'
  ratings reference, the item half-step exactly the user rows its items' ratings reference
  (:mod:`mpiml.mf.routing`: the sets are found once at setup, then one all-to-all-v per
  half-step). The objective is summed over the item block's ratings (their user rows are
  in hand after the item half-step's exchange). iALS's ``Y^T Y`` is the sum over ranks of
  the blocks' Gram matrices (exact in reproducible mode). Every row solve sees the same
  numbers in the same order as with replicated factors, so the factors agree to rounding
  (the Gram sums and the objective's order of summation differ).
- **DSGD**: a rank keeps its user block and the item block in hand; the objective after
  each epoch is summed by passing the item blocks once more around the ring (instead of
  allgathering ``Q``): the same trajectory as with replicated factors.

``factors="auto"`` (:func:`choose`) takes partitioned factors when there are several
ranks and the full factors are not small (:data:`AUTO_MIN_BYTES`), and either the routed
rows per iteration are at most :data:`ROUTE_SHARE` of what the allgather brings (on the
busiest rank) or the full factors would take more than :data:`MEMORY_SHARE` of the node's
available memory; DSGD by size alone (its ring moves the same item blocks either way).

Initial factors are those of replicated factors, drawn block by block (:func:`initial_blocks`:
the seeded stream is drawn in chunks and the rows before the block discarded, so no rank holds
the full matrices). Checkpoints gather the blocks on rank 0, which writes the same file as
replicated factors (so a run can resume at any rank count, with either layout); that costs
rank 0 the full factors for the time of the write (:func:`mpiml.mf.transport.gather_rows`,
:func:`~mpiml.mf.transport.scatter_rows`).
"""

from __future__ import annotations

import numpy as np

from mpiml.errors import ArgumentError, DivergenceError
from mpiml.mf import als, ials, routing
from mpiml.mf.partition import Rows

LAYOUTS = ("auto", "replicated", "partitioned")
# Until predict / evaluate / recommend / save work on partitioned factors (mpiml.mf.serving), a
# fitted model with them can only report its training history: "auto" then stays replicated.
# Set True where serving is wired into the estimator.
AUTO_PARTITIONS = False
AUTO_MIN_BYTES = 4 << 20   # below this the full factors are latency-bound: replicated costs less setup
ROUTE_SHARE = 0.5          # partitioned when the busiest rank receives at most this share of the allgather
MEMORY_SHARE = 0.125       # ... or when the full factors would exceed this share of the node's free memory
DRAW_CHUNK = 1 << 16       # normal draws at a time when skipping to a block


def choose(setting: str, size: int, factor_bytes: float, routed_rows=None, gathered_rows=None,
           memory: float = 0.0) -> str:
    """``"replicated"`` or ``"partitioned"`` for ``setting`` (pure; the same inputs on every rank).

    ``factor_bytes`` are the full factors' bytes, ``routed_rows`` the most rows a rank receives
    per iteration with partitioned factors and ``gathered_rows`` the fewest an allgather brings
    a rank (None: not computed, e.g. DSGD), ``memory`` the smallest free memory of the ranks' nodes.
    """
    if setting not in LAYOUTS:
        raise ArgumentError(f"factors must be one of {list(LAYOUTS)}, got {setting!r}")
    if setting != "auto":
        return setting
    if size == 1 or factor_bytes < AUTO_MIN_BYTES:
        return "replicated"
    if memory and factor_bytes > MEMORY_SHARE * memory:
        return "partitioned"
    if routed_rows is None or gathered_rows is None:
        return "partitioned"
    return "partitioned" if routed_rows <= ROUTE_SHARE * gathered_rows else "replicated"


def needs_plans(setting: str, size: int, factor_bytes: float) -> bool:
    """Whether :func:`choose` may pick partitioned factors, so the routes must be computed first."""
    return size > 1 and (setting == "partitioned" or (setting == "auto" and factor_bytes >= AUTO_MIN_BYTES))


# ------------------------------------------------------------------ initial factors
def normal_rows(rng: np.random.Generator, skip: int, rows: int, cols: int, scale: float) -> np.ndarray:
    """Rows ``skip:skip+rows`` of ``rng.normal(0, scale, size=(n, cols))``, drawing what comes before in chunks."""
    left = skip * cols
    while left > 0:
        rng.normal(0.0, scale, size=min(left, DRAW_CHUNK))
        left -= DRAW_CHUNK
    return rng.normal(0.0, scale, size=(rows, cols))


def initial_blocks(seed_words, scale: float, n_users: int, layout: als.Layout, user_rows, item_rows):
    """``(P block, Q block)``: rows ``user_rows`` and ``item_rows`` (``(start, stop)``) of the factors
    :func:`mpiml.mf.als.initial_factors` draws (``seed_words`` ``[seed, purpose]``, normals of ``scale``)."""
    blocks = []
    for skip, (lo, hi) in ((0, user_rows), (n_users, item_rows)):
        rng = np.random.default_rng(np.random.SeedSequence([int(w) for w in seed_words]))
        block = np.zeros((hi - lo, layout.width))
        block[:, :layout.rank] = normal_rows(rng, skip + lo, hi - lo, layout.rank, scale)
        blocks.append(block)
    if layout.biases:
        blocks[0][:, layout.fixed("users")] = 1.0
        blocks[1][:, layout.fixed("items")] = 1.0
    return blocks[0], blocks[1]


# ------------------------------------------------------------------ setup
def compact(rows: Rows, needed: np.ndarray) -> Rows:
    """``rows`` with local row numbers (from 0) and columns as positions in ``needed``."""
    return Rows(0, rows.n_rows, rows.indptr, routing.local_columns(rows.cols, needed), rows.vals)


def setup(model, data: dict, ex) -> dict:
    """Choose the layout of ``model``'s factors (collective) and, when partitioned, plan the routes.

    Sets ``model._partitioned`` and ``model.factors_layout_``; returns what to add to ``data``.
    """
    from mpiml.data.memory import node_available

    setting, size, lay = model._params.factors, ex.size, model._layout
    nu, ni = int(data["user_ids"].size), int(data["item_ids"].size)
    itemsize = np.dtype(getattr(model._params, "dtype", "float64")).itemsize
    full = (nu + ni) * lay.width * itemsize
    if model._params.reg == "auto" or (setting == "auto" and not AUTO_PARTITIONS):
        setting = "replicated"  # the reg search scores held-out pairs on full factors; see AUTO_PARTITIONS
    out, routed, gathered = {}, None, None
    if model.needs_item_rows and (setting == "partitioned" or needs_plans(setting, size, full)):
        out = plans(data, ex)
        ub, ib, r = data["user_bounds"], data["item_bounds"], ex.rank
        routed = sum(route.received() for route in out["routes"])
        gathered = nu + ni - int(ub[r + 1] - ub[r] + ib[r + 1] - ib[r])
    memory = 0.0
    if setting == "auto" and needs_plans(setting, size, full):
        from mpiml.collectives import allreduce

        # max of routed rows and of -gathered, -memory: one small reduction, the same verdict everywhere
        top = allreduce(np.array([routed or 0, -(gathered or 0), -float(node_available())], dtype=np.float64),
                        op="max", comm=ex.comm)
        memory = -top[2]
        if routed is not None:
            routed, gathered = top[0], -top[1]
    model.factors_layout_ = choose(setting, size, full, routed, gathered, memory)
    model._partitioned = model.factors_layout_ == "partitioned"
    return out if model._partitioned else {}


def plans(data: dict, ex) -> dict:
    """The two half-steps' routes (collective) and this rank's ratings with columns local to them."""
    ur, ir = data["user_rows"], data["item_rows"]
    items_needed, users_needed = routing.referenced(ur.cols), routing.referenced(ir.cols)
    return dict(routes=(routing.plan_route(items_needed, data["item_bounds"], ex.comm),
                        routing.plan_route(users_needed, data["user_bounds"], ex.comm)),
                user_local=compact(ur, items_needed), item_local=compact(ir, users_needed))


def model_bytes(model, data: dict, ex, itemsize: int) -> int:
    """Bytes of factor rows this rank holds at the peak of an iteration: its blocks (or the full
    factors), the rows it receives, and the block being solved."""
    ub, ib, r, width = data["user_bounds"], data["item_bounds"], ex.rank, model._layout.width
    own_u, own_i = int(ub[r + 1] - ub[r]), int(ib[r + 1] - ib[r])
    nu, ni = int(data["user_ids"].size), int(data["item_ids"].size)
    if not getattr(model, "_partitioned", False):  # both in full, the solved block, the side's new copy
        rows = nu + ni + max(nu + own_u, ni + own_i)
    elif model.needs_item_rows:
        to_users, to_items = data["routes"]
        rows = own_u + own_i + max(to_users.needed.size + own_u, to_items.needed.size + own_i)
    else:  # DSGD: the user block, the item block in hand and the one arriving
        rows = own_u + 2 * int(np.diff(ib).max())
    return int(rows * width * itemsize)


# ------------------------------------------------------------------ training
def check_finite(model, ex, block, side: str, it: int) -> None:
    """Stop every rank with the same error when any rank's solved ``block`` is not finite (collective)."""
    if ex.sum([0.0 if np.all(np.isfinite(block)) else 1.0])[0] > 0:
        raise DivergenceError(f"{model.algorithm}: {side} factors became non-finite at iteration {it + 1}; "
                              "raise the regularization or check the ratings", collective=True)


def train_als(model, data, ex, pb, qb, first, end, track):
    """Explicit ALS on partitioned factors (see the module docstring); returns the final blocks."""
    from mpiml.mf.models import _solve

    U, I = data["user_local"], data["item_local"]
    to_users, to_items = data["routes"]
    mu, lay, reg, weighted = model.global_mean_, model._layout, model.reg_, model._params.weighted
    for it in range(first, end):
        clock = model._clock(ex)
        qn = ex.route(to_users, qb)
        with ex.computing():
            pb = _solve(als.half_step, U, pb, qn, mu, reg, lay, "users", weighted)
        check_finite(model, ex, pb, "user", it)
        del qn
        pn = ex.route(to_items, pb)
        with ex.computing():
            qb = _solve(als.half_step, I, qb, pn, mu, reg, lay, "items", weighted)
        check_finite(model, ex, qb, "item", it)
        with ex.computing():
            err = I.vals - als.predict_rows(I, qb, pn, mu)  # the item block's ratings: their user rows are here
        del pn
        model._after_iteration(data, ex, it, pb, qb, model._record(ex, data, err, U, pb, I, qb), clock, track)
    return pb, qb


def gram(model, ex, block, rows: int) -> np.ndarray:
    """``F^T F`` of the factor matrix whose ``block`` each rank holds (``rows`` in all): the blocks'
    Gram matrices summed over ranks, exactly in reproducible mode (collective)."""
    k = block.shape[1]
    if model._exact:
        from mpiml.collectives.reproducible import Sum

        return ex.exact(Sum(k * k, max(int(rows), 1)).add_outer(block, block)).reshape(k, k)
    local = np.asarray(block.T @ block, dtype=np.float64)
    return ex.sum(local.reshape(-1)).reshape(k, k)


def train_ials(model, data, ex, pb, qb, first, end, track):
    """Implicit ALS on partitioned factors; returns the final blocks."""
    U, I = data["user_local"], data["item_local"]
    to_users, to_items = data["routes"]
    dtype, alpha = model._params.dtype, model._params.alpha
    nu, ni = int(data["user_ids"].size), int(data["item_ids"].size)
    pb, qb = pb.astype(dtype, copy=False), qb.astype(dtype, copy=False)
    gq = None
    for it in range(first, end):
        clock = model._clock(ex)
        if gq is None:
            gq = gram(model, ex, qb, ni)
        qn = ex.route(to_users, qb)
        with ex.computing():
            pb = model._half(U, qn, pb, gq.astype(dtype))
        check_finite(model, ex, pb, "user", it)
        del qn
        gp = gram(model, ex, pb, nu)
        pn = ex.route(to_items, pb)
        with ex.computing():
            qb = model._half(I, pn, qb, gp.astype(dtype))
        check_finite(model, ex, qb, "item", it)
        with ex.computing():
            observed = (ials.observed_terms if model._exact else ials.observed_loss)(I, qb, pn, alpha)
        del pn
        observed = (model._sum_terms(ex, observed, count=data["n"]) if model._exact else ex.sum([observed]))[0]
        gq = gram(model, ex, qb, ni)
        with ex.computing():
            objective = float(observed + np.sum(gp * gq) + model.reg_ * (np.trace(gp) + np.trace(gq)))
        model._after_iteration(data, ex, it, pb, qb, {"objective": objective}, clock, track)
    return pb, qb


def ring_sse(ex, blocks, x, y, mu, item_bounds):
    """``(sse, y)``: this rank's squared error over all its ratings, passing the item blocks once around
    the ring (each ``blocks[b]`` is scored when block ``b`` is in hand), and ``y`` home again."""
    from mpiml.mf import dsgd

    r, size = ex.rank, ex.size
    sse = 0.0
    for s in range(size):
        with ex.computing():
            sse += dsgd.block_sse(blocks[(r + s) % size], x, y, mu)
        incoming = (r + s + 1) % size
        y = ex.shift(y, int(item_bounds[incoming + 1] - item_bounds[incoming]))
    return sse, y
