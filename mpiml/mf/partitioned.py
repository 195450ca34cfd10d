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
- **Hot rows** (explicit ALS): a row rated more than a threshold number of times is solved
  from partial normal equations that every rank sums over its own raters and sends to the
  owner (:mod:`mpiml.mf.hot_rows`), so its raters need not be routed; the thresholds of both
  sides are priced at setup (:func:`choose_thresholds`) and the cheapest taken. The factors
  agree with replicated ones to rounding; reproducible mode routes every row.
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

from dataclasses import dataclass

import numpy as np

from mpiml.errors import ArgumentError, DivergenceError
from mpiml.mf import als, hot_rows, ials, routing
from mpiml.mf.partition import Rows, build_rows
from mpiml.runtime.comm import resolve_comm

LAYOUTS = ("auto", "replicated", "partitioned")
# FactorModel serves and saves partitioned factors (mpiml.mf.serving, block_store), but then predict,
# recommend and fold_in are collective and user_factors_ / P are absent: code written for the
# default layout (examples/recommend.py asks rank 0 alone) would hang or fail on a large model if
# "auto" switched silently, so "auto" stays replicated until that default changes on purpose.
AUTO_PARTITIONS = False
AUTO_MIN_BYTES = 4 << 20   # below this the full factors are latency-bound: replicated costs less setup
ROUTE_SHARE = 0.5          # partitioned when the busiest rank receives at most this share of the allgather
MEMORY_SHARE = 0.125       # ... or when the full factors would exceed this share of the node's free memory
DRAW_CHUNK = 1 << 16       # normal draws at a time when skipping to a block
FORCE_THRESHOLDS = None    # (users, items) hot-row thresholds instead of the cheapest (tests)


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
@dataclass(frozen=True)
class SidePlan:
    """This rank's exchange for the half-step that solves its rows of one side (users or items).

    Cold rows (rated at most ``threshold`` times) are solved from the other side's rows that
    ``route`` brings; hot rows from the partial normal equations (:mod:`mpiml.mf.hot_rows`) that
    every rank adds up over its own raters and sends back along ``hot_route``.
    """

    route: routing.Route      # other-side rows the cold rows reference
    rows: Rows                # this rank's rows (local numbering, hot ones empty), columns local to route.needed
    hot_route: routing.Route  # hot rows of this side that this rank's other-side rows rate
    raters: Rows              # per hot_route.needed row: its raters in this rank's other-side block (local rows)
    hot: np.ndarray           # local positions of this rank's hot rows
    hot_counts: np.ndarray    # their ratings (over all ranks)
    slots: np.ndarray         # the position in ``hot`` of each partial received (aligned with hot_route.send_rows)
    threshold: int

    def received_bytes(self, row_bytes: int, partial_bytes: int) -> int:
        """Bytes that come from other ranks per half-step."""
        return self.route.received() * row_bytes + self.hot_route.sent() * partial_bytes


def side_plan(own: Rows, other: Rows, counts, bounds, other_bounds, threshold: int, comm) -> SidePlan:
    """The :class:`SidePlan` of the rows ``own`` (global columns) given this rank's ``other`` rows, the
    side's global rating ``counts`` and ``threshold`` (the same on every rank); collective."""
    counts = np.asarray(counts, dtype=np.int64)
    hot_all = counts > threshold
    mine = hot_all[own.start:own.stop]
    keep = ~np.repeat(mine, own.counts())
    cold_cols = own.cols[keep]
    needed = routing.referenced(cold_cols)
    indptr = np.zeros(own.n_rows + 1, dtype=np.int64)
    np.cumsum(np.where(mine, 0, own.counts()), out=indptr[1:])
    rows = Rows(0, own.n_rows, indptr, routing.local_columns(cold_cols, needed), own.vals[keep])
    rated = hot_all[other.cols]
    hot_needed = routing.referenced(other.cols[rated])
    if threshold == hot_rows.NEVER:  # the same on every rank: no partial sums, nothing to plan
        nothing = np.zeros(0, dtype=np.int64)
        hot_route = routing.make_route(nothing, [nothing] * (len(bounds) - 1), bounds, resolve_comm(comm).Get_rank())
    else:
        hot_route = routing.plan_route(hot_needed, bounds, comm)
    raters = build_rows(0, hot_needed.size, routing.local_columns(other.cols[rated], hot_needed),
                        (other.row_ids() - other.start)[rated], other.vals[rated])
    hot = np.flatnonzero(mine).astype(np.int64)
    return SidePlan(routing.plan_route(needed, other_bounds, comm), rows, hot_route, raters, hot,
                    counts[own.start + hot], np.searchsorted(hot, hot_route.send_rows).astype(np.int64),
                    int(threshold))


def choose_thresholds(model, data: dict, ex) -> tuple:
    """``(users, items)``: the hot-row thresholds that minimize what the busiest rank receives per
    half-step (collective: one small max-reduction; :data:`mpiml.mf.hot_rows.NEVER` for every
    model but explicit ALS, and in reproducible mode, whose sums must not depend on the blocks)."""
    if model.implicit or not model.needs_item_rows or model._exact:
        return hot_rows.NEVER, hot_rows.NEVER
    if FORCE_THRESHOLDS is not None:
        return FORCE_THRESHOLDS
    if ex.size == 1:
        return hot_rows.NEVER, hot_rows.NEVER
    from mpiml.collectives import allreduce

    lay = model._layout
    row_bytes = lay.width * np.dtype(np.float64).itemsize
    sides = ((data["user_rows"], data["user_counts"], data["item_bounds"], "users"),
             (data["item_rows"], data["item_counts"], data["user_bounds"], "items"))
    grids, costs = [], []
    for own, counts, other_bounds, side in sides:
        grid = hot_rows.candidates(int(np.max(counts, initial=0)))
        owner = np.searchsorted(np.asarray(other_bounds, dtype=np.int64), own.cols, side="right") - 1
        costs.append(hot_rows.threshold_costs(
            np.asarray(counts)[own.start:own.stop], own.row_ids() - own.start, own.cols,
            owner, ex.rank, grid, row_bytes, 8 * hot_rows.packed_width(len(lay.free(side)))))
        grids.append(grid)
    top = allreduce(np.concatenate(costs), op="max", comm=ex.comm)
    first = grids[0].size
    return int(grids[0][np.argmin(top[:first])]), int(grids[1][np.argmin(top[first:])])


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
        out = plans(model, data, ex)
        ub, ib, r = data["user_bounds"], data["item_bounds"], ex.rank
        row = lay.width * itemsize
        routed = sum(plan.received_bytes(row, 8 * hot_rows.packed_width(len(lay.free(side))))
                     for plan, side in zip(out["sides"], ("users", "items"))) / row
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


def plans(model, data: dict, ex) -> dict:
    """The two half-steps' :class:`SidePlan` s (collective)."""
    t_users, t_items = choose_thresholds(model, data, ex)
    ur, ir, ub, ib = data["user_rows"], data["item_rows"], data["user_bounds"], data["item_bounds"]
    return dict(sides=(side_plan(ur, ir, data["user_counts"], ub, ib, t_users, ex.comm),
                       side_plan(ir, ur, data["item_counts"], ib, ub, t_items, ex.comm)))


def model_bytes(model, data: dict, ex, itemsize: int) -> int:
    """Bytes of factor rows this rank holds at the peak of an iteration: its blocks (or the full
    factors), the rows it receives, and the block being solved."""
    ub, ib, r, width = data["user_bounds"], data["item_bounds"], ex.rank, model._layout.width
    own_u, own_i = int(ub[r + 1] - ub[r]), int(ib[r + 1] - ib[r])
    nu, ni = int(data["user_ids"].size), int(data["item_ids"].size)
    if not getattr(model, "_partitioned", False):  # both in full, the solved block, the side's new copy
        rows = nu + ni + max(nu + own_u, ni + own_i)
    elif model.needs_item_rows:
        users, items = data["sides"]  # a hot row's partial sums take the memory of that many factor rows
        wide = [hot_rows.packed_width(len(model._layout.free(side))) / width for side in ("users", "items")]
        rows = own_u + own_i + max(users.route.needed.size + own_u + wide[0] * users.hot_route.send_rows.size,
                                   items.route.needed.size + own_i + wide[1] * items.hot_route.send_rows.size)
    else:  # DSGD: the user block, the item block in hand and the one arriving
        rows = own_u + 2 * int(np.diff(ib).max())
    return int(rows * width * itemsize)


# ------------------------------------------------------------------ training
def check_finite(model, ex, block, side: str, it: int) -> None:
    """Stop every rank with the same error when any rank's solved ``block`` is not finite (collective)."""
    if ex.sum([0.0 if np.all(np.isfinite(block)) else 1.0])[0] > 0:
        raise DivergenceError(f"{model.algorithm}: {side} factors became non-finite at iteration {it + 1}; "
                              "raise the regularization or check the ratings", collective=True)


def half_step(model, ex, plan: SidePlan, own: np.ndarray, other: np.ndarray, side: str):
    """``(new own block, the other-side rows routed in, this rank's squared error over its hot rows)``:
    one explicit ALS half-step solving ``side``'s rows on partitioned factors (collective)."""
    lay, mu, reg, weighted = model._layout, model.global_mean_, model.reg_, model._params.weighted
    free = lay.free(side)
    routed = ex.route(plan.route, other)
    parts = None
    if plan.threshold != hot_rows.NEVER:
        with ex.computing():
            design, offset = als.design_of(other, mu, lay, side)   # this rank's other-side block, its raters
            mine = hot_rows.normal_equations(plan.raters.indptr, plan.raters.cols, plan.raters.vals, design,
                                             np.broadcast_to(offset, other.shape[:1]))
        parts = ex.route_back(plan.hot_route, mine)
    with ex.computing():
        new = als.half_step_or_nan(plan.rows, own, routed, mu, reg, lay, side, weighted)
        sse = 0.0
        if parts is not None and plan.hot.size:
            sums = hot_rows.add_up(parts, plan.slots, plan.hot.size, plan.hot_route.send_counts)
            try:
                w, errors = hot_rows.solve(sums, reg * (plan.hot_counts if weighted else 1.0), free.size)
            except np.linalg.LinAlgError:
                w, errors = np.full((plan.hot.size, free.size), np.nan), np.full(1, np.nan)
            new[plan.hot[:, None], free] = w
            sse = float(errors.sum())
    return new, routed, sse


def train_als(model, data, ex, pb, qb, first, end, track):
    """Explicit ALS on partitioned factors (see the module docstring); returns the final blocks."""
    users, items = data["sides"]
    mu = model.global_mean_
    ur, ir = data["user_rows"], data["item_rows"]
    # penalties weigh each row by its ratings: the rows with local numbering, hot ones included
    U, I = Rows(0, ur.n_rows, ur.indptr, ur.cols, ur.vals), Rows(0, ir.n_rows, ir.indptr, ir.cols, ir.vals)
    for it in range(first, end):
        clock = model._clock(ex)
        pb, qn, _ = half_step(model, ex, users, pb, qb, "users")
        check_finite(model, ex, pb, "user", it)
        del qn
        qb, pn, hot_sse = half_step(model, ex, items, qb, pb, "items")
        check_finite(model, ex, qb, "item", it)
        with ex.computing():  # the item block's cold ratings (their user rows are here) and its hot rows' sums
            err = items.rows.vals - als.predict_rows(items.rows, qb, pn, mu)
        del pn
        record = model._record(ex, data, err, U, pb, I, qb, sse=err @ err + hot_sse)
        model._after_iteration(data, ex, it, pb, qb, record, clock, track)
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
    users, items = data["sides"]  # implicit ALS routes every row (no hot rows: see choose_thresholds)
    U, I, to_users, to_items = users.rows, items.rows, users.route, items.route
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
