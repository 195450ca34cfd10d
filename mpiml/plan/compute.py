"""Seconds of one step of a job on a layout: compute from calibrated constants, communication
from :mod:`mpiml.collectives.model`, both stretched when a node runs more ranks than it has cores.

Pure functions (no MPI, no I/O). A *step* is an epoch of the SGD strategies (sync,
local, oneshot) and an iteration of lbfgs and of mf (an ALS/iALS sweep, a DSGD epoch).

sgd reuses the per-update model behind ``--parallel auto`` (:mod:`mpiml.parallel.cost`:
the sparse products over the rank's block, the loss derivative per row, the passes over
the parameter block, the row- and column-group allreduces of each grid) with the
calibrated constants, and multiplies by the updates per epoch: ``ceil(rows / batch)``
for sync (a global batch), ``ceil(rows / (R batch))`` for local and oneshot (a batch per
replica; local adds one model average every ``sync_every`` updates). An update of a split
(model or hybrid) layout adds ``grid_update_overhead`` (its own path: partial margins, a
block gradient on 2-D arrays, a second reduction; the probe times it on a 1 x 2 grid).

mf per iteration and rank (``p`` ranks, ``k`` factors, ``w`` stored columns, ``N``
ratings, ``U`` users, ``I`` items), each half-step a block of rows solved then
allgathered (``(U or I) w`` values) to every rank:

- als: ``2 N/p k^2 c_acc + N/p c_als + (U + I)/p (k^3 c_solve + c_row)`` (the normal
  equations of both sides, the loss pass, one solve per row);
- ials (cg): ``2 (2 cg + 2) N/p k c_ials + N/p c_ials_rating + (U + I)/p (cg k^2 c_k2 + c_row)``
  plus the Gram matrix ``(U + I) k^2`` every rank computes in full (a BLAS call: threads help);
- dsgd: ``2 N/p (c_rating + k c_dsgd)`` (a pass of updates, a pass for the loss), plus ``p``
  ring shifts of an item block ``I/p w`` and one allgather of the item factors;
- every algorithm: ``mf_overhead`` an iteration.

lbfgs uses its own constants for its full-batch work (``lbfgs_dense_value`` a dense value,
``lbfgs_sparse_nnz`` a stored non-zero, ``lbfgs_row`` a row's loss, ``lbfgs_param`` a parameter of
the block an iteration): whole-array products run faster a value than mini-batches, and an
iteration's passes over the block cost more than an update's.

Each collective call of a step adds ``collective_overhead`` (measured: what a call costs
a training step beyond the collectives' model, a core per rank).

Oversubscription (:func:`oversubscription`, ranks x threads over cores, when above 1): a
step whose ``syncs`` collective calls split its compute into phases of ``compute / syncs``
costs ``syncs`` times :func:`oversubscribed_step` of that phase, a table the probe
measures (time-slicing, and the collective's wait for ranks that are not running while
the waiting ones poll, holding a core). The calls that directly follow another (mf's
allgathers after the clocks' allreduce) count as phases of no work. Transfers stretch
by the ratio; a step without collectives only time-shares.

A job's compute is multiplied by what the real step loop of the family that computes like it took
on one rank over this model's price of it (:func:`job_scale`, :func:`scale_family`, the probe's
problem). On top of all that, each collective call of a step adds what the probe measured for the job's
family at that many ranks per core (:func:`job_excess`): the family's real step loop on a small
problem, measured less predicted, per call (the layers a training step adds around its calls, the
algorithms' rounds each waiting for a rank that is not running, a larger message's pieces). With more
ranks than cores, that excess is what the family's step costs beyond the generic table's waits
(:func:`oversubscribed_step`), which grow with the work between the calls: the probe's problem is small,
and a job's phases are longer (a per-call excess that held all the waits under-priced a 3-rank DSGD
epoch of 3x the probe's ratings a rank by 1.3x).
"""

from __future__ import annotations

import math

from mpiml.collectives import model as collective_model
from mpiml.plan.calibration import DEFAULT, Calibration
from mpiml.plan.spec import Cluster, Job, Layout


def oversubscription(layout: Layout, cluster: Cluster) -> float:
    """How many times over a node's cores are asked for: ``ranks_per_node x threads / cores``, at least 1.

    A 2-core node running 4 single-threaded ranks is 2.0: the ranks time-share the cores,
    so compute takes twice as long.
    """
    asked = int(layout.ranks_per_node) * int(layout.threads_per_rank)
    return max(1.0, asked / max(int(cluster.cores_per_node), 1))


def oversubscribed_step(phase: float, ratio: float, calibration: Calibration = DEFAULT) -> float:
    """Seconds of one step of ``phase`` CPU seconds of work and one small collective on every rank, at ``ratio``
    ranks per core (above 1), from ``calibration.oversub_steps``.

    Between the measured phases: linear; below the shortest, the first segment extended (a
    latency floor); beyond the longest, proportional to the phase. Between measured ratios:
    linear, from 1 (the phase itself) up to the first; beyond the last, proportional to the ratio.
    """
    tables = calibration.oversub_steps
    if ratio <= 1.0 or not tables:
        return phase * max(ratio, 1.0)

    def at(points) -> float:
        if len(points) == 1:
            return points[0][1] * phase / points[0][0]
        if phase >= points[-1][0]:
            return points[-1][1] * phase / points[-1][0]
        i = 1
        while i < len(points) - 1 and points[i][0] < phase:
            i += 1
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        return max(y0 + (phase - x0) * (y1 - y0) / (x1 - x0), phase)

    below = (1.0, phase)
    for r, points in tables:
        here = at(points)
        if ratio <= r:
            return below[1] + (ratio - below[0]) * (here - below[1]) / (r - below[0])
        below = (r, here)
    return below[1] * ratio / below[0]


def thread_speedup(threads: int, calibration: Calibration = DEFAULT) -> float:
    """Speed-up of the multi-threaded (BLAS) part of a step: ``threads`` at ``thread_efficiency``."""
    return 1.0 + (max(int(threads), 1) - 1) * calibration.thread_efficiency


def lbfgs_history_share(iterations: int) -> float:
    """The mean passes over the parameters of ``iterations`` L-BFGS iterations over those of one with a full
    history: iteration ``i`` holds ``min(i - 1, MEMORY)`` pairs, each two inner products and two updates
    (4 passes), and every iteration 12 more (direction, point, gradient, line search)."""
    from mpiml.train.lbfgs_math import MEMORY

    n = max(int(iterations), 1)
    filling = min(n, MEMORY + 1)   # iterations 1..MEMORY+1 hold 0..MEMORY pairs, the rest MEMORY
    mean_pairs = (filling * (filling - 1) / 2 + (n - filling) * MEMORY) / n
    return (4 * mean_pairs + 12) / (4 * MEMORY + 12)


def _machine(job: Job, calibration: Calibration):
    from mpiml.parallel.cost import LBFGS_PASSES, Machine

    if job.algorithm == "lbfgs":   # full-batch products and losses: whole arrays at once
        # (the cost model charges LBFGS_PASSES / 8 passes of param_seconds a parameter, a full history's)
        param = calibration.lbfgs_param * 8 / LBFGS_PASSES * lbfgs_history_share(job.max_iter)
        return Machine(nnz_seconds=calibration.lbfgs_dense_value if job.dense else calibration.lbfgs_sparse_nnz,
                       row_seconds=calibration.lbfgs_row, param_seconds=param,
                       step_seconds=calibration.update_overhead, iteration_seconds=calibration.lbfgs_overhead)
    return Machine(nnz_seconds=calibration.dense_value if job.dense else calibration.sparse_nnz,
                   row_seconds=calibration.row_loss,
                   param_seconds=calibration.param_update,
                   step_seconds=calibration.update_overhead, iteration_seconds=calibration.lbfgs_overhead)


def _grid(layout: Layout, job: Job) -> tuple[int, int]:
    replicas, blocks = layout.replicas_blocks
    if job.kind == "sgd" and blocks > 1:
        blocks = min(blocks, max(int(job.features), 1))
    return replicas, blocks


def sgd_step(job: Job, layout: Layout, calibration: Calibration = DEFAULT) -> tuple[float, float, str, float, float]:
    """``(compute seconds, communication seconds, step, collective calls, calls right after another)`` of one
    sgd step, a core per rank."""
    from mpiml.parallel import cost

    replicas, blocks = _grid(layout, job)
    rows = max(int(job.rows), 1)
    stored = job.stored if job.stored else rows * int(job.features)
    machine, params = _machine(job, calibration), calibration.params
    problem = cost.Problem(rows, int(job.features), int(stored), job.outputs, int(job.batch_size), layout.ranks)
    split = "features"
    if job.algorithm == "lbfgs":
        e = cost.estimate_lbfgs(problem, replicas, blocks, split, machine, params)
        trials = cost.LBFGS_TRIALS
        # the column group sums each evaluation (with its gradient when the block is the whole model; else a
        # gradient sum of its own), the row group the margins, the penalty terms and the two-loop's products
        column = (trials + (blocks > 1)) if replicas > 1 else 0.0
        syncs = column + (3.0 if blocks > 1 else 0.0)
        # with no work before them: the penalty terms' sum (after the margins'), and a hybrid's gradient sum
        light = (1.0 if blocks > 1 else 0.0) + (1.0 if blocks > 1 and replicas > 1 else 0.0)
        return e.compute_seconds, e.comm_seconds, "iteration", syncs, light
    # a split layout's update: partial margins, a block gradient on 2-D arrays, a second reduction
    grid = calibration.grid_update_overhead if blocks > 1 else 0.0
    if job.algorithm == "sync":
        updates = math.ceil(rows / max(int(job.batch_size), 1))
        e = cost.estimate(problem, replicas, blocks, split, machine, params)
        syncs = updates * ((replicas > 1) + (blocks > 1))
        return updates * (e.compute_seconds + grid), updates * e.comm_seconds, "epoch", float(syncs), 0.0
    # local / oneshot: each replica steps on its own batch of batch_size rows
    updates = max(math.ceil(rows / (replicas * max(int(job.batch_size), 1))), 1)
    local = cost.Problem(rows, int(job.features), int(stored), job.outputs, int(job.batch_size) * replicas,
                         layout.ranks)
    e = cost.estimate(local, replicas, blocks, split, machine, params)
    row_comm = e.comm_seconds - cost.allreduce_cost(e.allreduce_words[1], replicas, params)[1]
    comm, syncs = updates * row_comm, float(updates * (blocks > 1))
    if job.algorithm == "local" and replicas > 1:
        averages = updates / max(int(job.sync_every), 1)
        comm += averages * cost.allreduce_cost(e.allreduce_words[1], replicas, params)[1]
        syncs += averages
    return updates * (e.compute_seconds + grid), comm, "epoch", syncs, 0.0


def _allgather(values: float, itemsize: int, p: int, params) -> float:
    if p <= 1:
        return 0.0
    return collective_model.predict("native", int(values * itemsize), p, params, collective="allgather")


def _allreduce(nbytes: float, p: int, params) -> float:
    if p <= 1:
        return 0.0
    return collective_model.predict("native", int(nbytes), p, params, collective="allreduce", in_place=True)


def mf_step(job: Job, layout: Layout, calibration: Calibration = DEFAULT) -> tuple[float, float, str, float, float]:
    """``(compute seconds, communication seconds, "iteration", collective calls, calls right after another)``
    of one mf iteration (the allgathers follow the allreduces of the ranks' clocks)."""
    c, p, params = calibration, layout.ranks, calibration.params
    k, w, size = float(job.factors), float(job.width), job.factor_itemsize
    n, users, items = float(job.ratings), float(job.users), float(job.items)
    threads = thread_speedup(layout.threads_per_rank, c)
    local = n / p
    if job.algorithm == "als":
        # the normal equations of both sides (k^2 a rating), a solve per row, the loss (als_rating a rating)
        compute = 2 * local * k * k * c.als_rating_k2 + local * c.als_rating \
            + (users + items) / p * (k**3 * c.als_row_k3 + c.als_row)
    elif job.algorithm == "ials":
        steps = float(job.cg_steps)
        if job.solver == "cholesky":
            rows = 2 * local * k * k * c.als_rating_k2 + (users + items) / p * (k**3 * c.als_row_k3 + c.als_row)
        else:   # each conjugate-gradient step passes over a row's ratings twice, plus the right-hand side
            rows = (2 * steps + 2) * 2 * local * k * c.ials_rating_k \
                + (users + items) / p * (steps * k * k * c.als_row_k2 + c.als_row)
        compute = rows + local * c.ials_rating + (users + items) * k * k * c.gram_value / threads
    else:  # dsgd: a pass of updates and a pass for the loss, each a fixed cost and a k-long product a rating
        compute = 2 * local * (c.mf_rating + k * c.dsgd_rating_k)
    compute += c.mf_overhead
    # each gather of a factor matrix is an allreduce of the ranks' clocks and an allgather
    comm = _allreduce(64, p, params)   # the loss sums
    if job.algorithm == "dsgd":
        shift = collective_model.predict("native", int(items / p * w * size), 2, params, collective="bcast")
        comm += p * shift + _allreduce(64, p, params) + _allgather(items * w, size, p, params)
        syncs = p + 3.0
    else:
        comm += 2 * _allreduce(64, p, params) + _allgather(users * w, size, p, params) \
            + _allgather(items * w, size, p, params)
        syncs = 5.0
    return compute, (comm if p > 1 else 0.0), "iteration", (syncs if p > 1 else 0.0), (2.0 if p > 1 else 0.0)


def family(job: Job, layout: Layout) -> str | None:
    """The job's family in :attr:`Calibration.job_excess`: ``"sync-data"``, ``"lbfgs-model"``, ... (sgd:
    strategy and layout; one rank is ``data``), the algorithm (mf); None for the others."""
    if job.kind == "mf":
        return job.algorithm
    if job.algorithm not in ("sync", "lbfgs"):
        return None
    replicas, blocks = layout.replicas_blocks
    return f"{job.algorithm}-{'data' if blocks == 1 else 'model' if replicas == 1 else 'hybrid'}"


def job_excess(name: str | None, ratio: float, calibration: Calibration = DEFAULT) -> float:
    """Seconds a collective call of a ``name`` family's step adds beyond the model at ``ratio`` ranks per core
    (at least 1), from ``calibration.job_excess`` (a hybrid without its own entry: the model-parallel one).

    Between measured ratios: linear; below the lowest, that one's (a core per rank is the least
    contention the probe can see); beyond the highest, proportional to the ratio. 0 with no entry.
    """
    points = _excess_points(name, calibration)
    if not points:
        return 0.0
    if ratio <= points[0][0]:
        return points[0][1]
    for (r0, s0), (r1, s1) in zip(points, points[1:]):
        if ratio <= r1:
            return s0 + (ratio - r0) * (s1 - s0) / (r1 - r0)
    return points[-1][1] * ratio / points[-1][0]


def _excess_points(name: str | None, calibration: Calibration) -> tuple:
    """``name``'s ``((ratio, seconds), ...)`` in ``calibration.job_excess`` (a hybrid without its own: the
    model-parallel one's); () without."""
    table = dict(calibration.job_excess)
    return (table.get(name) or table.get(name.replace("-hybrid", "-model")) or ()) if name else ()


def scale_family(job: Job) -> str | None:
    """The family whose probe computes like ``job`` (:func:`job_scale`): the compute follows the rows, not the
    layout, so sgd's dense jobs take the ``-data`` probe's (dense rows) and sparse ones the ``-model``
    probe's (wide sparse rows), whatever their layout; mf the algorithm's."""
    if job.kind == "mf":
        return job.algorithm
    if job.algorithm not in ("sync", "lbfgs"):
        return None
    return f"{job.algorithm}-{'data' if job.dense else 'model'}"


def job_scale(name: str | None, calibration: Calibration = DEFAULT) -> float:
    """The factor on the compute of a job whose :func:`scale_family` is ``name``, from ``calibration.job_scale``
    (1 without an entry)."""
    return dict(calibration.job_scale).get(name, 1.0) if name else 1.0


_ONE_CORE: dict = {}


def _one_core(job: Job, layout: Layout, calibration: Calibration):
    """:func:`sgd_step` or :func:`mf_step`, remembered: a table of layouts asks for the same rank count and
    grid on many node shapes (the sparse exchange's price alone is a p x p array)."""
    key = (job, layout.ranks, layout.replicas_blocks, layout.threads_per_rank)
    found = _ONE_CORE.get(key)
    if found is not None and found[0] is calibration:
        return found[1]
    if len(_ONE_CORE) > 4096:
        _ONE_CORE.clear()
    value = (sgd_step if job.kind == "sgd" else mf_step)(job, layout, calibration)
    _ONE_CORE[key] = (calibration, value)
    return value


def step_seconds(job: Job, layout: Layout, cluster: Cluster, calibration: Calibration = DEFAULT) -> dict:
    """One step's seconds on ``layout`` in ``cluster``: ``compute``, ``comm``, ``total``, ``step``, ``oversubscription``.

    On an oversubscribed node, compute is time-shared (``compute`` stretched by
    :func:`oversubscription`), transfers too, and what :func:`oversubscribed_step` adds beyond
    that, the collectives' waits for ranks that are not running, counts as communication.
    """
    compute, comm, step, syncs, light = _one_core(job, layout, calibration)
    name = family(job, layout)
    compute *= job_scale(scale_family(job), calibration)
    over = oversubscription(layout, cluster)
    if over <= 1.0:   # (the oversubscribed steps below were measured with the calls' whole cost)
        comm += syncs * calibration.collective_overhead
    if over > 1.0:
        shared = compute * over
        comm *= over
        if syncs > 0:   # the work splits between the calls that follow some; the others follow a call
            heavy = max(syncs - light, 1.0)
            steps = heavy * oversubscribed_step(compute / heavy, over, calibration) \
                + (syncs - heavy) * oversubscribed_step(0.0, over, calibration)
            comm += max(steps - shared, 0.0)
        compute = shared
    if syncs > 0:   # (it may be negative, where the model over-prices the family: never below the work)
        comm = max(comm + syncs * job_excess(name, over, calibration), 0.0)
    return {"compute": compute, "comm": comm, "total": compute + comm, "step": step, "oversubscription": over,
            "collectives": syncs}


def steps(job: Job) -> int:
    """Steps in the whole job: epochs (SGD strategies), ``max_iter`` (lbfgs, an upper bound) or ``iterations`` (mf)."""
    if job.kind == "mf":
        return int(job.iterations)
    return int(job.max_iter) if job.algorithm == "lbfgs" else int(job.epochs)
