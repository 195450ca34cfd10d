"""Which layout trains: ``--parallel data|model|hybrid|auto``, ``--grid RxC``, ``--split``, on plain values.

:func:`plan` sizes the problem over all ranks and picks the layout asked for (by the cost
model of :mod:`mpiml.parallel.cost` where it is left open); :class:`mpiml.sgd.LinearModel`
calls it in ``fit`` (``parallel=``, ``grid=``, ``split=``), and the command line
(:mod:`mpiml.cli.parallel_options`) before training, to print the choice and, with
``--explain``, :func:`explain`'s table.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpiml.errors import ArgumentError
from mpiml.parallel import cost
from mpiml.parallel.grid import parse_grid
from mpiml.runtime.agree import raise_if_any

PARALLEL = ("data", "model", "hybrid", "auto")
SPLIT_CHOICES = ("auto", "features", "classes")
PRICED = ("sync", "lbfgs")   # the strategies the cost model prices (others: data parallelism under auto)


def problem_of(comm, X, k: int | None = None, batch: int = 256, y=None, n_classes: int | None = None) -> cost.Problem:
    """The sizes of the training problem over all ranks (collective).

    ``k``: the model's outputs; None: those of a softmax model of ``y`` (``n_classes``, or
    the largest label of any rank plus one).
    """
    from mpi4py import MPI

    from mpiml.runtime.comm import private_comm

    c = private_comm(comm)
    nnz = X.nnz if sp.issparse(X) else X.size
    stats = np.array([c.allreduce(X.shape[0]), c.allreduce(nnz)], dtype=np.int64)
    if k is None:
        top = c.allreduce(float(np.max(y, initial=-np.inf)), op=MPI.MAX)
        k = max(n_classes or (int(top) + 1 if np.isfinite(top) else 2), 2)
    return cost.Problem(int(stats[0]), int(X.shape[1]), int(stats[1]), int(k), int(batch), comm.Get_size())


def check_request(parallel: str, split: str) -> None:
    """Raise :class:`~mpiml.errors.ArgumentError` for a ``parallel`` or ``split`` that is not one of the choices."""
    if parallel not in PARALLEL:
        raise ArgumentError(f"unknown parallel {parallel!r}; choose from {', '.join(PARALLEL)}")
    if split not in SPLIT_CHOICES:
        raise ArgumentError(f"unknown split {split!r}; choose from {', '.join(SPLIT_CHOICES)}")


def choose_layout(problem: cost.Problem, parallel: str = "data", grid: str | None = None, split: str = "auto",
                  strategy: str = "sync") -> cost.Estimate:
    """The layout asked for (pure: the same answer on every rank).

    ``parallel``: one of :data:`PARALLEL`; ``grid``: ``"RxC"`` or None (chosen by cost);
    ``split``: ``auto``, ``features`` or ``classes``; ``strategy``: the training strategy
    (``sync`` layouts are priced per update, ``lbfgs`` per iteration; under ``auto`` the
    others train data-parallel).
    """
    check_request(parallel, split)
    if split == "classes" and problem.k == 1:
        raise ArgumentError("--split classes splits the classes of a softmax model; this model has one output "
                            "(binary or regression): use --split features")
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


def plan(comm, X, *, strategy: str, batch: int, parallel: str = "data", grid: str | None = None,
         split: str = "auto", k: int | None = None, y=None, n_classes: int | None = None):
    """``(estimate, problem)`` of the layout to train on (collective; the same on every rank).

    A layout that cannot be (a grid of the wrong size, a classes split of a binary model,
    ...) is an :class:`~mpiml.errors.ArgumentError` raised on every rank. ``k``, ``y`` and
    ``n_classes`` as for :func:`problem_of`.
    """
    problem = problem_of(comm, X, k, batch, y, n_classes)
    error = chosen = None
    try:
        chosen = choose_layout(problem, parallel, grid, split, strategy)
    except ArgumentError as exc:
        error = exc
    raise_if_any(error, comm)
    return chosen, problem


def explain(problem: cost.Problem, chosen: cost.Estimate, strategy: str) -> str:
    """The cost table of every layout with ``chosen`` marked (per update; ``lbfgs``: per iteration)."""
    return cost.explain(problem, chosen, strategy="lbfgs" if strategy == "lbfgs" else "sync")


def describe(chosen: cost.Estimate) -> dict:
    """``layout_`` of an estimator: ``parallel``, ``grid``, ``split`` and the estimated cost of a step."""
    return {"parallel": chosen.parallel, "grid": chosen.grid, "split": chosen.split,
            "estimated_bytes_per_step": chosen.bytes_per_step,
            "estimated_seconds_per_step": chosen.seconds_per_step}
