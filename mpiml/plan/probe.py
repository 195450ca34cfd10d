"""The calibration probe: a few seconds of tiny real trainings that measure the plan model's
compute constants on this machine (``mpiml tune`` runs it; :mod:`mpiml.plan.calibration` keeps them).

Each rank trains small synthetic problems alone (on ``COMM_SELF``, all ranks at once, so
that they share the memory bandwidth as a job's ranks do) through the same code as
``mpiml sgd`` and ``mpiml mf``, times their epochs and iterations, and fits the constants
of :mod:`mpiml.plan.compute` to them by non-negative least squares on relative error.
The result is the median over ranks (the same on every rank). The peak resident memory
of a rank before any of it (interpreter, mpi4py, numpy, scipy, the compiled kernels) is
the ``baseline_bytes``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace

import numpy as np

from mpiml.parallel.cost import LBFGS_TRIALS
from mpiml.plan.calibration import DEFAULT, Calibration
from mpiml.plan.spec import Job, Layout

# sgd probes: (rows, features, density, batch, epochs) of sync SGD on a synthetic classification set
SGD_PROBES = ((3000, 4, 1.0, 16, 3), (8000, 2, 1.0, 2048, 3), (8000, 300, 1.0, 256, 3), (3000, 40, 1.0, 64, 3),
              (2000, 20000, 0.005, 256, 3), (2000, 100000, 0.0002, 32, 3), (3000, 2000, 0.05, 128, 3))
# dense rows, features, iterations: the difference of a run of 2 and one of that many (before the
# ftol test stops it: about 8 iterations on these)
# (rows, features, iterations, density): dense ones, and wide sparse ones (where the passes over the
# parameters weigh)
LBFGS_PROBES = ((3000, 20, 7, 1.0), (20000, 100, 7, 1.0), (40000, 4, 5, 1.0), (2000, 50000, 7, 0.004),
                (3000, 20000, 7, 0.01), (1500, 150000, 7, 0.001))
# mf probes: (algorithm, users, items, ratings, rank, iterations)
# (larger ones too: factor matrices beyond the L2 cache cost more per rating)
MF_PROBES = (("dsgd", 2000, 500, 40000, 4, 3), ("dsgd", 2000, 500, 40000, 32, 3), ("dsgd", 8000, 2000, 120000, 16, 3),
             ("als", 2000, 500, 40000, 8, 3), ("als", 1000, 300, 30000, 48, 3), ("als", 6000, 200, 20000, 4, 3),
             ("als", 8000, 2000, 120000, 16, 3), ("ials", 1000, 300, 30000, 48, 3), ("ials", 6000, 300, 20000, 32, 3),
             ("ials", 8000, 2000, 120000, 32, 3))
MF_CONSTANTS = ("dsgd_rating_k", "mf_rating", "mf_overhead", "als_rating_k2", "als_rating", "als_row_k3", "als_row",
                "als_row_k2", "ials_rating_k", "ials_rating", "gram_value")
SGD_CONSTANTS = ("update_overhead", "dense_value", "sparse_nnz", "row_loss", "param_update")
LBFGS_CONSTANTS = ("lbfgs_overhead", "lbfgs_dense_value", "lbfgs_row", "lbfgs_sparse_nnz", "lbfgs_param")
# split-layout probes: (rows, features, density, batch, epochs) of sync SGD as one rank of a 1 x 2 grid
GRID_PROBES = ((2000, 20000, 0.005, 256, 3), (3000, 300, 1.0, 128, 3))
# oversubscription probe: CPU seconds of work between two collectives (probe.oversubscription_steps)
OVERSUB_PHASES = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def _sgd_data(rows, features, density, separation=4.0):
    from mpiml.data.synthetic import generate

    options = {"n": rows, "d": features, "classes": 2, "density": density, "separation": separation, "noise": 0.1,
               "seed": 0}
    return generate("classification", options, 0, rows)


def _sgd_cpu(X, y, strategy="sync", **settings) -> tuple[float, object]:
    """CPU seconds of this thread in one fit (robust to other processes sharing the core), and its result."""
    from mpi4py import MPI

    from mpiml.sgd import LinearModel

    model = LinearModel("logistic", strategy, comm=MPI.COMM_SELF, standardize=False, **settings)
    start = time.thread_time()
    model.fit(X, y)
    return time.thread_time() - start, model.result_


def _sgd_run(rows, features, density, batch, epochs):
    """CPU seconds of one epoch (and its evaluation pass) of sync SGD: the difference of ``epochs`` and one."""
    X, y = _sgd_data(rows, features, density)
    # the least of two runs each: contention only ever adds CPU time (cache misses)
    once = min(_sgd_cpu(X, y, epochs=1, batch_size=batch)[0] for _ in range(2))
    more = min(_sgd_cpu(X, y, epochs=epochs, batch_size=batch)[0] for _ in range(2))
    return max(more - once, 1e-6) / (epochs - 1), X


def _sgd_job(rows, features, density, batch, epochs, X) -> Job:
    dense = density >= 1.0
    nnz = rows * features if dense else int(X.nnz)
    return Job("sgd", "sync", rows=rows, features=features, nnz=nnz, dense=dense, batch_size=batch, epochs=epochs)


def _sgd_terms(job: Job) -> np.ndarray:
    """CPU seconds of one sync SGD epoch per unit of each of :data:`SGD_CONSTANTS` (the model is linear in
    them), with the sparse product of the evaluation pass that follows each epoch."""
    from mpiml.plan.compute import sgd_step

    base = Calibration(**{name: 0.0 for name in SGD_CONSTANTS + LBFGS_CONSTANTS})
    out = []
    for name in SGD_CONSTANTS:
        c = replace(base, **{name: 1.0})
        if name == "sparse_nnz" and job.dense:
            c = replace(c, sparse_nnz=0.0)
        if name == "dense_value" and not job.dense:
            c = replace(c, dense_value=0.0)
        out.append(sgd_step(job, Layout(1, 1), c)[0] + (job.stored if name == "sparse_nnz" and not job.dense else 0))
    return np.array(out)


def _evaluation(job: Job, c: Calibration) -> float:
    """The known part of the evaluation pass after an epoch: full-batch losses (and dense products)."""
    return job.rows * c.lbfgs_row + (job.stored * c.lbfgs_dense_value if job.dense else 0.0)


def _fit(terms: np.ndarray, seconds: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error; a constant no probe sees keeps its ``fallback``."""
    from scipy.optimize import nnls

    weights = 1.0 / np.maximum(seconds, 1e-9)
    scale = np.maximum(np.abs(terms).max(axis=0), 1e-30)
    solution, _ = nnls(terms / scale * weights[:, None], seconds * weights)
    seen = np.abs(terms).max(axis=0) > 0
    return np.where(seen, solution / scale, fallback)


def _grid_cpu(X, y, epochs, batch) -> float:
    """CPU seconds of sync SGD as column 0 of a 1 x 2 grid (half the features), the row-group sums
    left out (identities): a rank's work in a model-parallel update, without the network."""
    from mpiml.parallel.grid import GridComms
    from mpiml.parallel.layout import make_part
    from mpiml.parallel.trainer import GridLayout
    from mpiml.sgd.models import make_model
    from mpiml.train import loop
    from mpiml.train.config import TrainConfig

    model = make_model("logistic", X.shape[1], 2)
    part = make_part("features", X.shape[1], model.k, 2, 0)
    block = X[:, part.lo:part.hi]
    block = block.tocsr() if hasattr(block, "tocsr") else np.ascontiguousarray(block)
    layout = GridLayout(model, part, GridComms(rows=1, cols=2))
    start = time.thread_time()
    loop.train(layout, block, y, TrainConfig(strategy="sync", epochs=epochs, batch_size=batch))
    return time.thread_time() - start


def _grid_overhead(calibration: Calibration) -> float:
    """Seconds per update of a split layout beyond the model's whole-model terms (median over the probes)."""
    from mpiml.plan.compute import sgd_step

    found = []
    for rows, features, density, batch, epochs in GRID_PROBES:
        X, y = _sgd_data(rows, features, density)
        once = min(_grid_cpu(X, y, 1, batch) for _ in range(2))
        more = min(_grid_cpu(X, y, epochs, batch) for _ in range(2))
        job = _sgd_job(rows, features, density, batch, epochs, X)
        rest = sgd_step(job, Layout(1, 2, parallel="model"), replace(calibration, grid_update_overhead=0.0))[0]
        updates = math.ceil(rows / batch)
        found.append((max(more - once, 1e-6) / (epochs - 1) - rest) / updates)
    return max(statistics.median(found), 0.0)


def _mf_run(algorithm, users, items, ratings, rank, iterations):
    """The job and the median CPU seconds of its iterations after the first."""
    from mpi4py import MPI

    from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
    from mpiml.mf import MODELS

    shard = synthetic_ratings(SyntheticSpec(users=users, items=items, ratings=ratings), 0, 1)
    model = MODELS[algorithm](rank=rank, iters=iterations)
    model.fit(shard, comm=MPI.COMM_SELF)
    seconds = [record["compute_cpu_seconds"] for record in model.history_]
    info = model.fit_info_
    job = Job("mf", algorithm, users=info["users"], items=info["items"], ratings=info["train_ratings"], factors=rank,
              iterations=iterations)
    return job, statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def measure_local(calibration: Calibration = DEFAULT) -> dict:
    """This rank's constants (a dict of :meth:`Calibration.constants` names), from the probes.

    Times are CPU seconds of this process with BLAS on one thread: what a rank costs on a
    core of its own, whatever else the machine runs meanwhile.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _measure_local(calibration)


def _measure_local(calibration: Calibration) -> dict:
    from mpiml.plan.compute import mf_step, sgd_step
    from mpiml.runtime.rss import peak_rss_bytes

    # warm up the kernels first (compiled or read from the cache), then the baseline memory
    from mpiml.mf import kernels as mf_kernels  # noqa: F401
    from mpiml.sgd import kernels
    from mpiml.train import lbfgs_math

    kernels.load()
    lbfgs_math.load()
    values = {"baseline_bytes": peak_rss_bytes()}
    _sgd_cpu(*_sgd_data(200, 4, 1.0), epochs=1, batch_size=16)
    _sgd_cpu(*_sgd_data(200, 4, 1.0), "lbfgs", max_iter=3)
    _mf_run("als", 200, 100, 2000, 4, 1)
    sgd_runs = []
    for probe in SGD_PROBES:
        per_epoch, X = _sgd_run(*probe)
        sgd_runs.append((_sgd_job(*probe, X), per_epoch))
    lbfgs_runs = []
    for rows, features, iters, density in LBFGS_PROBES:
        X, y = _sgd_data(rows, features, density)
        # the least of two runs each: contention only ever adds CPU time (cache misses); wide ones both past
        # the history's filling (MEMORY iterations), so that the difference is of iterations with a full one
        # (narrow dense ones converge by then, and their passes over the parameters weigh nothing)
        wide = density < 1.0
        first = lbfgs_math.MEMORY + 2 if wide else 2
        few, short = min((_sgd_cpu(X, y, "lbfgs", max_iter=first, tol=1e-12) for _ in range(2)), key=lambda r: r[0])
        many, long = min((_sgd_cpu(X, y, "lbfgs", max_iter=first + iters - 2, tol=1e-12) for _ in range(2)),
                         key=lambda r: r[0])
        # per evaluation (the line search takes more of them in some iterations than others), at the
        # model's evaluations an iteration
        done = long.history[-1].get("lbfgs_evaluations", iters) - short.history[-1].get("lbfgs_evaluations", 2)
        if done > 0:   # (wide: a job of very many iterations, a full history's passes)
            job = Job("sgd", "lbfgs", rows=rows, features=features, max_iter=10**6 if wide else iters,
                      dense=density >= 1.0,
                      nnz=rows * features if density >= 1.0 else int(X.nnz))
            lbfgs_runs.append((job, max(many - few, 1e-6) / done * LBFGS_TRIALS))
    # The SGD epochs include a full-batch evaluation priced by the lbfgs constants, and lbfgs
    # iterations include parameter passes priced by the SGD ones: two rounds settle both.
    fitted = calibration
    for _ in range(2):
        terms = [_sgd_terms(job) for job, _ in sgd_runs]
        seconds = [max(t - _evaluation(job, fitted), 1e-6) for job, t in sgd_runs]
        fallback = np.array([getattr(calibration, name) for name in SGD_CONSTANTS])
        values.update(zip(SGD_CONSTANTS, map(float, _fit(np.array(terms), np.array(seconds), fallback))))
        fitted = fitted.with_constants(values)
        terms, seconds = [], []
        for job, per_iteration in lbfgs_runs:
            rest = sgd_step(job, Layout(1, 1), replace(fitted, **{name: 0.0 for name in LBFGS_CONSTANTS}))[0]
            unit = replace(fitted, **{name: 0.0 for name in SGD_CONSTANTS + LBFGS_CONSTANTS})
            terms.append([sgd_step(job, Layout(1, 1), replace(unit, **{name: 1.0}))[0] for name in LBFGS_CONSTANTS])
            seconds.append(max(per_iteration - rest, 1e-6))
        fallback = np.array([getattr(calibration, name) for name in LBFGS_CONSTANTS])
        if terms:
            values.update(zip(LBFGS_CONSTANTS, map(float, _fit(np.array(terms), np.array(seconds), fallback))))
        fitted = fitted.with_constants(values)
    # mf, in order: dsgd (its rate also prices every algorithm's loss pass) with the fixed cost of
    # an iteration, then als's normal equations and solves, then implicit ALS's conjugate gradient
    for algorithm, names in (("dsgd", ("dsgd_rating_k", "mf_rating", "mf_overhead")),
                             ("als", ("als_rating_k2", "als_rating", "als_row_k3", "als_row")),
                             ("ials", ("ials_rating_k", "ials_rating", "als_row_k2"))):
        terms, seconds = [], []
        for probe in (probe for probe in MF_PROBES if probe[0] == algorithm):
            job, step = _mf_run(*probe)
            rest = mf_step(job, Layout(1, 1), fitted.with_constants({name: 0.0 for name in names}))[0]
            zero = fitted.with_constants({name: 0.0 for name in MF_CONSTANTS})
            terms.append([mf_step(job, Layout(1, 1), zero.with_constants({name: 1.0}))[0] for name in names])
            seconds.append(max(step - rest, 1e-6))
        fallback = np.array([getattr(fitted, name) for name in names])
        values.update(zip(names, map(float, _fit(np.array(terms), np.array(seconds), fallback))))
        fitted = fitted.with_constants(values)
    values["grid_update_overhead"] = _grid_overhead(fitted)
    return values


def measure(comm=None, calibration: Calibration = DEFAULT) -> Calibration:
    """Run the probes on every rank of ``comm`` (collective); the median constants, the same on every rank.

    When the ranks of a node outnumber its cores, also :func:`oversubscription_steps` at that
    ratio (the file keeps this one ratio); with 2 or more ranks, a core each, :func:`collective_overhead`;
    then :func:`job_probes` (each job family's real step: its scale, and its excess at this ratio).
    """
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    mine = measure_local(calibration)
    everyone = comm.allgather(mine)
    agreed = {name: statistics.median(v[name] for v in everyone) for name in mine}
    agreed["baseline_bytes"] = int(max(v["baseline_bytes"] for v in everyone))
    measured = oversubscription_steps(comm)
    if measured is not None:   # this machine's ratio alone: the defaults are another machine's
        agreed["oversub_steps"] = merge_steps((), *measured)
    overhead = collective_overhead(comm, params=calibration.params)
    if overhead is not None:
        agreed["collective_overhead"] = overhead
    # last: each family's real step loop against the model with everything above
    return job_probes(comm, calibration.with_constants(agreed, source="probe"))


def merge_steps(tables: tuple, ratio: float, points) -> tuple:
    """``tables`` (:attr:`Calibration.oversub_steps`) with the entry of ``ratio`` replaced by ``points``."""
    from mpiml.plan.calibration import table

    return table([(r, p) for r, p in tables if abs(r - ratio) > 1e-9] + [(ratio, points)])


def _node_ratio(comm) -> float:
    """The most ranks per core of any node of ``comm`` (collective): its ranks over the union of their affinity."""
    from mpi4py import MPI

    from mpiml.runtime.threads import node_cores

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        local, cores = node.Get_size(), node_cores(node)
    finally:
        node.Free()
    return float(comm.allreduce(local / max(cores, 1), op=MPI.MAX))


def oversubscription_steps(comm=None, phases=OVERSUB_PHASES, seconds: float = 0.15):
    """``(ratio, ((phase, step seconds), ...))`` when some node runs more ranks than cores, else None. Collective.

    Each rank computes ``phase`` CPU seconds (a busy loop, however the core is shared), then
    joins a 512-byte ``mpiml.allreduce``, as a training step does (a gradient, a loss; MPICH takes a
    path for 8 bytes alone that waits about half as long on an oversubscribed node); the step is the mean wall
    time of a step over about ``seconds`` (the slowest rank's). ``ratio``: the most ranks per
    core of any node. About ``len(phases) x seconds``.
    """
    from mpi4py import MPI

    import mpiml
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    ratio = _node_ratio(comm)
    if ratio <= 1.0:
        return None
    x, a = np.zeros(64), np.ones(1000)
    clock, cpu = time.perf_counter, time.thread_time
    points = []
    for phase in phases:
        reps = int(min(max(seconds / (phase * ratio), 10), 2000))
        for _ in range(3):   # warm up: the first steps pay for the collective's set-up
            mpiml.allreduce(x, comm=comm)
        comm.Barrier()
        start = clock()
        for _ in range(reps):
            until = cpu() + phase   # ``phase`` CPU seconds, however long the core is shared
            while cpu() < until:
                np.sqrt(a)
            mpiml.allreduce(x, comm=comm)
        step = (clock() - start) / reps
        points.append((phase, float(comm.allreduce(step, op=MPI.MAX))))
    return ratio, tuple(points)


def collective_overhead(comm=None, phase: float = 1e-4, reps: int = 400, params=None) -> float | None:
    """Seconds a 512-byte ``mpiml.allreduce`` after ``phase`` CPU seconds of work costs a step beyond the work
    and the collectives' model of the call (``params``), when no node runs more ranks than cores; None
    otherwise or on one rank. The median of 5 rounds of ``reps`` steps (the slowest rank's). Collective."""
    from mpi4py import MPI

    import mpiml
    from mpiml.collectives import model
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    p = comm.Get_size()
    if p == 1 or _node_ratio(comm) > 1.0:
        return None
    x, a = np.zeros(64), np.ones(1000)
    clock, cpu = time.perf_counter, time.thread_time
    rounds = []
    for _ in range(5):
        for _ in range(3):
            mpiml.allreduce(x, comm=comm)
        comm.Barrier()
        start = clock()
        for _ in range(reps):
            until = cpu() + phase
            while cpu() < until:
                np.sqrt(a)
            mpiml.allreduce(x, comm=comm)
        rounds.append(comm.allreduce((clock() - start) / reps, op=MPI.MAX))
    priced = model.predict("native", x.nbytes, p, params, collective="allreduce", in_place=True)
    return max(statistics.median(rounds) - phase - priced, 0.0)


def store_collective_overhead(path) -> None:
    """Measure :func:`collective_overhead` on ``COMM_WORLD`` (with the file's link parameters) and write it into
    the tuning file ``path`` (rank 0; the rest of the file kept). Run it with 2 or more ranks, a core each."""
    from mpi4py import MPI

    from mpiml.plan.calibration import load_calibration, store

    calibration = load_calibration(path)
    found = collective_overhead(MPI.COMM_WORLD, params=calibration.params)
    if found is not None and MPI.COMM_WORLD.Get_rank() == 0:
        store(path, replace(calibration, collective_overhead=found))


def store_oversubscription_steps(path) -> None:
    """Measure :func:`oversubscription_steps` on ``COMM_WORLD`` and merge them into the tuning file ``path``
    (rank 0; the file's other sections, constants and measured ratios are kept, the built-in
    defaults are not: they are another machine's). Run it with more ranks than cores."""
    import os

    from mpi4py import MPI

    from mpiml.collectives.tuning import read_document
    from mpiml.plan.calibration import SECTION, load_calibration, store, table

    measured = oversubscription_steps(MPI.COMM_WORLD)
    if measured is not None and MPI.COMM_WORLD.Get_rank() == 0:
        calibration = load_calibration(path)
        document = read_document(path) if os.path.exists(path) else {}
        own = table((document.get(SECTION) or {}).get("oversub_steps") or {})
        store(path, replace(calibration, oversub_steps=merge_steps(own, *measured)))


# each family's real step loop (job_probes): small generated problems, a few tenths of a second each at a
# core per rank (their rows: every rank's share of them), each step timed over 20-50 ms at least
JOB_PROBES = (
    ("sync-data", dict(rows=16000, features=40, density=1.0, strategy="sync", parallel="data", batch_size=256,
                       epochs=3)),
    ("sync-model", dict(rows=3000, features=40000, density=0.005, strategy="sync", parallel="model",
                        batch_size=256, epochs=4)),
    # (the compute probe's largest dense lbfgs problem: a full-batch pass costs more a value as the rows
    # outgrow the caches, 1.1 ns at 7 MB, 1.3-1.5 at 15, 2.6 at 30 on the dev VM, which the model does not know)
    ("lbfgs-data", dict(rows=20000, features=100, density=1.0, strategy="lbfgs", parallel="data", max_iter=20)),
    ("lbfgs-model", dict(rows=2000, features=50000, density=0.004, strategy="lbfgs", parallel="model",
                         max_iter=20)),
    ("als", dict(users=4000, items=1000, ratings=100000, rank=16, iters=6)),
    ("ials", dict(users=4000, items=1000, ratings=100000, rank=32, iters=6)),
    # (DSGD's ratings past the caches, as a real job's are: its epoch costs more a rating beyond 2 MiB of them, 1.17x
    # over 300,000 ratings than over 100,000 on the dev VM, whose cores have 2 MiB of L2 each)
    ("dsgd", dict(users=6000, items=1500, ratings=250000, rank=16, iters=6)),
)


def _job_step(comm, name: str, sizes: dict) -> tuple[Job, Layout, float, float]:
    """Run the ``name`` family's probe on every rank of ``comm`` through the code ``mpiml sgd`` / ``mpiml mf``
    run: the job, its layout on this many ranks, the wall seconds of a step (the slowest rank's median;
    lbfgs: the mean iteration after the first; mf: the iterations after the first), as the benchmark times
    them, and the least share of a core a rank got (CPU over wall seconds of the fit)."""
    from mpi4py import MPI

    from mpiml.runtime import partition

    p, rank = comm.Get_size(), comm.Get_rank()
    if "users" in sizes:
        from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
        from mpiml.mf import MODELS

        shard = synthetic_ratings(SyntheticSpec(users=sizes["users"], items=sizes["items"], ratings=sizes["ratings"]),
                                  rank, p)
        model = MODELS[name](rank=sizes["rank"], iters=sizes["iters"])
        clocks = time.perf_counter(), time.thread_time()
        model.fit(shard, comm=comm)
        clocks = time.perf_counter() - clocks[0], time.thread_time() - clocks[1]
        seconds = [record["seconds"] for record in model.history_][1:]
        info = model.fit_info_
        job = Job("mf", name, users=info["users"], items=info["items"], ratings=info["train_ratings"],
                  factors=sizes["rank"], iterations=sizes["iters"])
        layout = Layout(1, p)
        step = statistics.median(seconds)
    else:
        from mpiml.data.synthetic import generate
        from mpiml.sgd import LinearModel

        rows, features, density = sizes["rows"], sizes["features"], sizes["density"]
        lo, hi = partition.contiguous_block(rows, p, rank)
        options = {"n": rows, "d": features, "classes": 2, "density": density, "separation": 4.0, "noise": 0.1,
                   "seed": 0}
        X, y = generate("classification", options, lo, hi)
        parallel = sizes["parallel"] if p > 1 else "data"
        settings = {k: sizes[k] for k in ("batch_size", "epochs", "max_iter") if k in sizes}
        if sizes["strategy"] == "lbfgs":
            settings["tol"] = 1e-12   # every iteration it is asked for
        model = LinearModel("logistic", sizes["strategy"], parallel=parallel, comm=comm, **settings)
        clocks = time.perf_counter(), time.thread_time()
        model.fit(X, y)
        clocks = time.perf_counter() - clocks[0], time.thread_time() - clocks[1]
        history = model.history_
        stored = int(comm.allreduce(X.nnz if hasattr(X, "nnz") else X.size))
        job = Job("sgd", sizes["strategy"], rows=rows, features=features, nnz=stored, dense=density >= 1.0,
                  batch_size=sizes.get("batch_size", 256), epochs=sizes.get("epochs", 1),
                  max_iter=sizes.get("max_iter", 100))
        layout = Layout(1, p, parallel=parallel)
        if sizes["strategy"] == "lbfgs":
            times = history[-1].get("lbfgs_seconds") or []
            step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 2 else \
                history[-1]["seconds"] / max(len(times), 1)
        else:
            step = statistics.median(record["epoch_seconds"] for record in history)
    # the share of a core this rank got (MPICH's waits poll: they count as its own); the least of the ranks'
    share = min(clocks[1] / clocks[0], 1.0) if clocks[0] > 0 else 1.0
    return job, layout, float(comm.allreduce(step, op=MPI.MAX)), float(comm.allreduce(share, op=MPI.MIN))


def _alone(comm, run):
    """``run(COMM_SELF)`` on rank 0 while the others sleep (they would take a core polling a barrier); its
    result on every rank. Collective."""
    from mpi4py import MPI

    found = run(MPI.COMM_SELF) if comm.Get_rank() == 0 else None
    done = comm.Ibarrier()
    while not done.Test():
        time.sleep(0.001)
    return comm.bcast(found, root=0)


def job_probes(comm=None, calibration: Calibration = DEFAULT, probes=JOB_PROBES, runs: int = 5) -> Calibration:
    """``calibration`` with each family's real step loop measured (``probes``: ``(family, sizes)`` pairs,
    default :data:`JOB_PROBES`): its :attr:`~Calibration.job_scale` and, with 2 or more ranks, its
    :attr:`~Calibration.job_excess` at this communicator's ranks per core. Collective; the same on every rank.

    Each probe runs on one rank alone (the faster of two runs), then (2 or more ranks) on all,
    ``runs`` times (the median: a probe's step lasts a few scheduler slices, and with more ranks
    than cores one run's excess alone moved 2-3x from run to run).
    The first gives the family's scale: measured over predicted on one rank, times the share of
    the core the rank got (CPU over wall seconds: a busy machine's other work is not the loop's). The entry of the excess is what the
    step on all ranks costs beyond that scaled compute and the predicted communication, per
    collective call. About 1 s on one rank, 5-10 s on several.
    """
    from threadpoolctl import threadpool_limits

    from mpiml.plan.calibration import merge_excess, scale_table
    from mpiml.plan.compute import step_seconds
    from mpiml.plan.spec import Cluster
    from mpiml.runtime.comm import resolve_comm

    comm = resolve_comm(comm)
    p = comm.Get_size()
    excess, scales = calibration.job_excess, dict(calibration.job_scale)
    ratio = _node_ratio(comm) if p > 1 else 1.0
    # one node as the model sees it: this many ranks on cores enough for ``ratio`` ranks per core
    cluster = Cluster(nodes_max=1, cores_per_node=max(int(round(p / ratio)), 1) if ratio > 1 else p)
    # the model without what the probe measures (with more ranks than cores the generic table's waits stay: the
    # family's excess is what it costs beyond them, compute.step_seconds)
    bare = replace(calibration, job_excess=(), job_scale=())
    from mpiml.mf import kernels as mf_kernels  # noqa: F401  (every rank at once, not one after the other)
    from mpiml.sgd import kernels
    from mpiml.train import lbfgs_math

    kernels.load()
    lbfgs_math.load()
    with threadpool_limits(limits=1):
        for name, sizes in probes:
            # the least of two runs: contention only ever adds time; and of a core to itself, the part this
            # rank got (other work on the machine is not the loop's cost)
            job1, layout1, single, share1 = _alone(comm, lambda self_comm: min(
                (_job_step(self_comm, name, sizes) for _ in range(2)), key=lambda found: found[2] * found[3]))
            one = step_seconds(job1, layout1, cluster, bare)["total"]
            scale = single * share1 / one if one > 0 and single > 0 else 1.0
            scales[name] = scale   # (the probes' rows: dense for the -data families, sparse for -model)
            if p < 2:
                continue
            found = sorted((_job_step(comm, name, sizes) for _ in range(max(int(runs), 1))), key=lambda f: f[2])
            job, layout, measured, share = found[len(found) // 2]   # (the same run on every rank: max over ranks)
            predicted = step_seconds(job, layout, cluster, bare)
            if predicted["collectives"] > 0:
                # a core per rank: compute slowed by what other work took of it; more ranks than cores: the
                # model's time-sharing
                slowed = 1.0 / max(share, 0.05) if ratio <= 1.0 else 1.0
                beyond = measured - (scale * predicted["compute"] * slowed + predicted["comm"])
                excess = merge_excess(excess, name, ratio, beyond / predicted["collectives"])
    return replace(calibration, job_excess=excess, job_scale=scale_table(scales))


def store_job_probes(path) -> None:
    """Measure :func:`job_probes` on ``COMM_WORLD`` with the tuning file ``path``'s calibration and merge them into
    the file (rank 0; the rest kept). With more ranks than cores, the excess's oversubscribed entry."""
    from mpi4py import MPI

    from mpiml.plan.calibration import load_calibration, store

    MPI.COMM_WORLD.Barrier()   # after whatever wrote the file before
    calibration = load_calibration(path)
    found = job_probes(MPI.COMM_WORLD, calibration)
    if MPI.COMM_WORLD.Get_rank() == 0:
        store(path, found)
    MPI.COMM_WORLD.Barrier()
