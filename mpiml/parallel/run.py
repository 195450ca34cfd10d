"""The glue of ``mpiml sgd --parallel data|model|hybrid|auto --grid RxC --split ... --explain``.

:func:`fit_function` returns what to call instead of ``LinearModel.fit``: the estimator's
own ``fit`` for data parallelism (the data-parallel trainer, untouched), else a function
that lays the shard out on the chosen grid, trains with :func:`mpiml.parallel.train_grid`
and leaves the whole model on the estimator (``coef_``, ``predict``, ``save`` work as after
a data-parallel fit). It takes plain values; the command-line options and the mapping
from parsed arguments live in :mod:`mpiml.cli.parallel_options`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpiml.parallel import cost
from mpiml.parallel.grid import GridComms, parse_grid
from mpiml.parallel.layout import make_part
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.errors import ArgumentError

PARALLEL = ("data", "model", "hybrid", "auto")
SPLIT_CHOICES = ("auto", "features", "classes")
PRICED = ("sync", "lbfgs")   # the strategies the cost model prices (others: data parallelism under auto)


def problem_of(est, comm, X, y) -> cost.Problem:
    """The sizes of the training problem of ``est`` (a LinearModel) over all ranks (collective)."""
    from mpi4py import MPI

    from mpiml.runtime.comm import private_comm

    c = private_comm(comm)
    nnz = X.nnz if sp.issparse(X) else X.size
    stats = np.array([c.allreduce(X.shape[0]), c.allreduce(nnz)], dtype=np.int64)
    top = c.allreduce(float(np.max(y, initial=-np.inf)), op=MPI.MAX)
    softmax = est.model_name == "softmax"
    k = (est.n_classes or (int(top) + 1 if np.isfinite(top) else 2)) if softmax else 1
    batch = est.config.batch_size * est.config.accumulate
    return cost.Problem(int(stats[0]), int(X.shape[1]), int(stats[1]), max(k, 2) if softmax else 1, batch,
                        comm.Get_size())


def choose_layout(problem: cost.Problem, parallel: str = "data", grid: str | None = None, split: str = "auto",
                  strategy: str = "sync") -> cost.Estimate:
    """The layout asked for (pure: the same answer on every rank).

    ``parallel``: one of :data:`PARALLEL`; ``grid``: ``"RxC"`` or None (chosen by cost);
    ``split``: ``auto``, ``features`` or ``classes``; ``strategy``: the training strategy
    (``sync`` layouts are priced per update, ``lbfgs`` per iteration; under ``auto`` the
    others train data-parallel).
    """
    every = cost.estimates(problem, strategy="lbfgs" if strategy == "lbfgs" else "sync")
    if split != "auto":
        every = [e for e in every if e.split == split or e.cols == 1]
    if grid:
        rows, cols = parse_grid(grid, problem.p)
        kind = "data" if cols == 1 else ("model" if rows == 1 else "hybrid")
        if parallel not in ("auto", kind):
            raise ArgumentError(f"--grid {grid} is a {kind} layout, not --parallel {parallel}")
        every = [e for e in every if (e.rows, e.cols) == (rows, cols)]
        if not every:
            raise ArgumentError(f"no {split} split fits grid {grid} for this model and data")
        return every[0]
    if parallel == "auto" and strategy not in PRICED:
        every = [e for e in every if e.parallel == "data"]  # the estimates are those of sync updates
    if parallel != "auto":
        every = [e for e in every if e.parallel == parallel]
    if not every:
        raise ArgumentError(f"no {parallel} layout for {problem.p} ranks"
                            + (" (a hybrid grid needs p = R x C with R, C > 1)" if parallel == "hybrid" else ""))
    return every[0]


def fit_function(est, comm, X, y, *, parallel: str = "data", grid: str | None = None, split: str = "auto",
                 explain: bool = False, say=None):
    """``est.fit`` for a data-parallel layout, else a grid fit with the same signature (collective).

    Parameters
    ----------
    est : mpiml.sgd.LinearModel
        Its model name, strategy, classes and batch size size the problem.
    comm : mpi4py.MPI.Intracomm
    X, y : this rank's rows (as for ``est.fit``), used for the sizes only.
    parallel, grid, split : str
        ``--parallel``, ``--grid`` and ``--split`` (see :func:`choose_layout`).
    explain : bool
        Tell ``say`` the cost table of every layout.
    say : callable, optional
        ``say(text)`` prints a line for people (e.g. :func:`mpiml.cli.output.say`); default silent.

    Returns
    -------
    callable
        ``fit(X, y, X_test=None, y_test=None, where=None, where_test=None)``; afterwards
        ``est.layout_`` says which layout trained (``parallel``, ``grid``, ``split``, estimates).
    """
    say = say or (lambda text: None)
    if parallel == "data" and not grid and not explain:
        return est.fit
    strategy = est.config.strategy
    error = chosen = problem = None
    try:
        problem = problem_of(est, comm, X, y)
        chosen = choose_layout(problem, parallel, grid, split, strategy)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    if explain:
        say(cost.explain(problem, chosen, strategy="lbfgs" if strategy == "lbfgs" else "sync"))
    est.layout_ = {"parallel": chosen.parallel, "grid": chosen.grid, "split": chosen.split,
                   "estimated_bytes_per_step": chosen.bytes_per_step,
                   "estimated_seconds_per_step": chosen.seconds_per_step}
    if chosen.cols == 1:
        return est.fit
    say(f"layout: {chosen.parallel} on a {chosen.grid} grid, {chosen.split} split over the columns")

    def fit(X, y, X_test=None, y_test=None, where=None, where_test=None):
        return fit_grid(est, chosen.rows, chosen.cols, chosen.split, X, y, X_test, y_test, where, where_test)

    return fit


def fit_grid(est, rows, cols, split, X, y, X_test=None, y_test=None, where=None, where_test=None):
    """Train the :class:`~mpiml.sgd.LinearModel` ``est`` on a ``rows x cols`` grid (collective).

    ``X, y`` are this rank's consecutive rows with every feature (as for ``est.fit``);
    they are redistributed over the grid first (:func:`mpiml.data.columns.to_grid`).
    Labels, class counts and ``standardize`` are handled as by ``est.fit``.
    """
    from mpiml.data.columns import to_grid
    from mpiml.data.shard import Shard
    from mpiml.parallel.trainer import train_grid
    from mpiml.runtime.errors import DataError
    from mpiml.sgd import scaling
    from mpiml.sgd.estimator import MAX_CLASSES, _max_over, check_labels
    from mpiml.sgd.models import make_model

    group = est._group()
    y = np.asarray(y, dtype=np.float64)
    width = group.bcast_object(X.shape[1])
    group.agree(None if X.shape[1] == width else DataError(
        f"this rank's data has {X.shape[1]} features, rank 0's has {width}"))
    stats = _max_over(group, np.array([-np.min(y, initial=np.inf), np.max(y, initial=-np.inf)]))
    est.negative_label_ = -1.0 if -stats[0] < 0 else 0.0
    classes = est.n_classes or (int(stats[1]) + 1 if np.isfinite(stats[1]) else 2)
    error = model = None
    try:
        if est.model_name == "softmax" and not est.n_classes and classes > MAX_CLASSES:
            raise DataError(f"the largest label is {stats[1]:g}: more than {MAX_CLASSES} softmax classes; "
                            f"pass n_classes (--classes) if that is really meant")
        model = make_model(est.model_name, X.shape[1], max(classes, 2), est.fit_intercept, est.squared_hinge)
        make_part(split, model.n_features, model.k, cols, 0)
    except (ArgumentError, DataError) as exc:
        error = exc
    group.agree(error)
    est.model_ = model
    y_enc = check_labels(model, y, group, where)
    test_enc = None
    if X_test is not None:
        test_enc = check_labels(model, np.asarray(y_test, dtype=np.float64), group, where_test)
    standardize = getattr(est, "standardize", False)
    if standardize:  # statistics of the whole rows, before they are cut into blocks
        mean, scale = scaling.fit_scaler(X, group.allreduce)
        X = scaling.transform(X, mean, scale)
        X_test = None if X_test is None else scaling.transform(X_test, mean, scale)
    comms = GridComms.split(group.comm, rows, cols, est.algorithm)
    try:
        part = make_part(split, model.n_features, model.k, cols, comms.col)
        mine = to_grid(Shard(X, y_enc), comms, split)
        test = None
        if X_test is not None:
            t = to_grid(Shard(X_test, test_enc), comms, split)
            test = (t.X, t.y.astype(y_enc.dtype))
        result = train_grid(model, part, mine.X, mine.y.astype(y_enc.dtype), est.config, comms, test,
                            est.checkpoint_dir, est.resume, est.stop_at_update, est.progress,
                            getattr(est, "stop_requested", None))
    finally:
        comms.free()
    est.result_ = result
    est.theta_ = scaling.unscale(model, result.theta, mean, scale) if standardize else result.theta
    est.history_ = result.history
    return est
