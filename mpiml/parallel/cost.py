"""How many bytes and seconds one sync SGD update (or L-BFGS iteration) costs under each layout.

Inputs: ``n`` rows, ``d`` features, ``nnz`` nonzeros of the training matrix (``n d``
when dense), ``k`` model outputs (1, or the softmax classes), ``batch`` rows per update
and ``p`` ranks. Layouts: every grid ``R x C = p`` with the features split over the
``C`` columns, and for softmax also with the classes split. ``p x 1`` is data
parallelism, ``1 x p`` model parallelism, the rest hybrid.

Per update and rank, with ``b = batch / R`` rows of the batch in a row group and
``z = nnz / n`` nonzeros per row (all counts in float64 words of 8 bytes):

=================  ===============================  ==================================  ====================
layout             row-group allreduce (C ranks)    column-group allreduce (R ranks)    model block updated
=================  ===============================  ==================================  ====================
data (C = 1)       none                             ``(d + 1) k + 1 + p`` (*)           ``(d + 1) k``
features split     ``b k`` (partial margins)        ``(d / C + 1) k + 1``               ``(d / C + 1) k``
classes split      ``b`` (max) + ``2 b`` (sums)     ``(d + 1) k / C + 1``               ``(d + 1) k / C``
=================  ===============================  ==================================  ====================

(*) or, where :func:`mpiml.train.sparse_exchange.exchange_cost` predicts it cheaper (wide sparse rows),
the sparse allreduce of the batch gradient's expected nonzeros, as ``--collective-algorithm auto`` runs it.

Seconds = communication + compute. Communication: for each allreduce, the algorithm
``mpiml.allreduce(algorithm="auto")`` would run (:func:`mpiml.collectives.select.choose`),
priced by the collectives' cost model :func:`mpiml.collectives.model.predict` where that
module exists, else by the small alpha-beta model below (same defaults). Bytes moved:
what the algorithm sends per rank (ring/Rabenseifner ``2 (q-1)/q m``, recursive doubling
and the library's small-message path ``ceil(log2 q) m``). Compute, with the constants of
:class:`Machine` (measured roughly on a 2-core VM with numpy/scipy; they set the order
of magnitude, not the last digit):

- ``nnz_seconds`` per nonzero and output, twice (margins ``X W``, gradient ``X^T r``),
  over the rank's block: ``2 b z k / C`` (features) or ``2 b z k / C`` (classes, all
  features times ``k / C`` classes);
- ``row_seconds`` per row and output of the loss derivative (every rank of a row group
  computes it for all ``b`` rows: the redundancy model parallelism pays);
- ``param_seconds`` per parameter of the block for the dense per-update work
  (gradient buffer, penalty, optimizer step): the term data parallelism pays in full on
  every rank, whatever the sparsity of the batch.

``lbfgs`` (full-batch L-BFGS, :mod:`mpiml.parallel.lbfgs`) is priced per *iteration*
(:func:`estimate_lbfgs`), with ``r = n / R`` rows per row group, ``m`` =
:data:`~mpiml.train.lbfgs_math.MEMORY` pairs and ``T`` = :data:`LBFGS_TRIALS`
line-search evaluations per iteration:

=================  =========================================  =============================================
layout             row-group allreduces (C ranks)             column-group allreduces (R ranks)
=================  =========================================  =============================================
data (C = 1)       none                                       ``T`` x ``d k + k + 2 + R``
features split     ``r k + C``; 3; ``6 m + 9 + 2 C``          ``T`` x ``k + 2 + R``; ``d k / C + R``
classes split      ``T`` x (``r`` (max), ``2 r + C``, 1);     ``T`` x ``2 + R``; ``(d + 1) k / C + R``
                   3; ``6 m + 9 + 2 C``
=================  =========================================  =============================================

Compute per iteration: two sparse products over the rank's block of the whole data
(``2 nnz k / (R C)`` nonzero-outputs: ``X p`` for the line, ``X^T r`` for the gradient; on
the ``p x 1`` grid ``X^T r`` is taken at every evaluation, ``(1 + T) nnz k / R``, as its
gradient travels with the loss),
``T`` loss evaluations of the row group's ``r`` rows, and :data:`LBFGS_PASSES` dense
passes over the parameter block (two-loop inner products, direction, history). The
trial evaluations need no pass over the data (the margins along the line are
``z + t X p``), which is why ``T`` costs only loss work and a small allreduce. So the
rule ``--parallel auto`` applies to ``lbfgs``: data parallelism pays the allreduce of the
whole gradient and ``LBFGS_PASSES`` passes over the whole model per iteration; a
features split pays one allreduce of the row group's margins and ``1/C`` of the passes;
the cheapest sum wins. Wide sparse sets (``d`` much larger than ``n / R``) go to model
or hybrid layouts, narrow ones with many rows to data parallelism. ``model_bytes`` is
the parameter block and its L-BFGS history, ``(2 m + 8)`` vectors of the block per rank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mpiml.collectives import model as collective_model
from mpiml.parallel.grid import factorizations
from mpiml.train.lbfgs_math import MEMORY

WORD = 8
LBFGS_TRIALS = 1.1                # line-search evaluations per L-BFGS iteration (the unit step is mostly taken)
LBFGS_PASSES = 4 * MEMORY + 12    # dense passes over the block per iteration (inner products, direction, ...)
LBFGS_VECTORS = 2 * MEMORY + 8    # block-sized vectors an L-BFGS rank holds (history, point, gradient, ...)


@dataclass(frozen=True)
class Machine:
    """Per-operation seconds of the compute model (communication is priced by
    :mod:`mpiml.collectives.model`)."""

    nnz_seconds: float = 1.0e-8      # scipy CSR row selection + matvec, per nonzero and output
    row_seconds: float = 6.0e-8      # loss derivative (expit, log-sum-exp, ...) per row and output
    param_seconds: float = 8.0e-9    # numpy passes over the model block per update (about 8 of them)
    step_seconds: float = 1.5e-4     # fixed Python cost of one update, every layout
    iteration_seconds: float = 1.5e-3  # fixed Python cost of one L-BFGS iteration (line search, two-loop)


@dataclass(frozen=True)
class Problem:
    """The sizes the estimate needs."""

    n: int
    d: int
    nnz: int
    k: int
    batch: int
    p: int


@dataclass
class Estimate:
    """Predicted cost of one update under one layout (per rank, the slowest rank)."""

    parallel: str        # data, model or hybrid
    rows: int            # R
    cols: int            # C
    split: str           # features or classes
    bytes_per_step: float
    comm_seconds: float
    compute_seconds: float
    allreduce_words: tuple = ()   # (row group words, column group words)
    model_bytes: float = 0.0      # lbfgs: parameter block and L-BFGS history per rank

    @property
    def seconds_per_step(self) -> float:
        return self.comm_seconds + self.compute_seconds

    @property
    def grid(self) -> str:
        return f"{self.rows}x{self.cols}"

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(grid=self.grid, seconds_per_step=self.seconds_per_step)
        out["allreduce_words"] = list(self.allreduce_words)
        return out


def _algorithm(nbytes: float, q: int, params=None) -> str:
    from mpiml.collectives.select import choose, model_winner

    if params is not None:   # planning with given parameters: the model's pick at this size, no table per q
        return model_winner("allreduce", int(nbytes), q, params)
    return choose("allreduce", "auto", int(nbytes), q)


def allreduce_cost(words: float, q: int, params=None) -> tuple[float, float]:
    """``(bytes sent per rank, seconds)`` of one ``mpiml.allreduce`` of ``words`` float64 over ``q`` ranks
    (``params``: the collectives' :class:`~mpiml.collectives.model.ModelParams`, default when None)."""
    if q <= 1 or words <= 0:
        return 0.0, 0.0
    m = words * WORD
    algorithm = _algorithm(m, q, params)
    steps_log = math.ceil(math.log2(q))
    if algorithm in ("ring", "rabenseifner"):
        sent = 2 * (q - 1) / q * m
    elif algorithm == "tree":
        sent = 2 * steps_log * m
    else:  # native / recursive doubling
        sent = steps_log * m if m < 64 * 1024 else 2 * (q - 1) / q * m
    return sent, collective_model.predict(algorithm, int(m), q, params, in_place=True)


def estimate(problem: Problem, rows: int, cols: int, split: str = "features",
             machine: Machine = Machine(), params=None) -> Estimate:
    """The cost of one update of ``problem`` on an ``rows x cols`` grid with ``split``."""
    n, d, k, p = max(problem.n, 1), problem.d, problem.k, problem.p
    b = min(problem.batch, n) / rows
    z = problem.nnz / n
    if split == "features":
        row_words = b * k if cols > 1 else 0.0
        col_words = (d / cols + 1) * k + 1 + (p if cols == 1 else 0)
        block = (d / cols + 1) * k
        loss_work = b * k
    else:
        row_words = 3 * b if cols > 1 else 0.0
        col_words = (d + 1) * k / cols + 1
        block = (d + 1) * k / cols
        loss_work = b * (k / cols + 3)
    row_calls = 2 if split == "classes" and cols > 1 else 1
    row_bytes, row_seconds = allreduce_cost(row_words / row_calls, cols, params)
    col_bytes, col_seconds = allreduce_cost(col_words, rows, params)
    # sync SGD sends only the batch gradient's nonzeros where cheaper (sparse_exchange); rows without
    # zeros make a dense gradient, where pricing the sparse exchange (half of a 64-node plan's time) cannot win
    if cols == 1 and rows > 1 and problem.nnz < problem.n * problem.d:
        from mpiml.train.sparse_exchange import exchange_cost

        sent, seconds, _, _ = exchange_cost(d, k, b, z, p, 2 + p)
        if seconds < col_seconds:
            col_bytes, col_seconds = sent, seconds
    compute = (machine.step_seconds + 2 * b * z * k / cols * machine.nnz_seconds
               + loss_work * machine.row_seconds + block * machine.param_seconds)
    parallel = "data" if cols == 1 else ("model" if rows == 1 else "hybrid")
    return Estimate(parallel, rows, cols, split, row_calls * row_bytes + col_bytes,
                    row_calls * row_seconds + col_seconds, compute, (row_words, col_words))


def estimate_lbfgs(problem: Problem, rows: int, cols: int, split: str = "features",
                   machine: Machine = Machine(), params=None) -> Estimate:
    """The cost of one full-batch L-BFGS iteration of ``problem`` on an ``rows x cols`` grid (``batch`` unused)."""
    n, d, k = max(problem.n, 1), problem.d, problem.k
    r = n / rows
    T = LBFGS_TRIALS
    gram = 6 * MEMORY + 9 + 2 * cols
    if split == "features":
        row_calls = [(r * k + cols, 1.0), (3, 1.0), (gram, 1.0)] if cols > 1 else []
        col_calls = [(k + 2 + rows, T), (d * k / cols + rows, 1.0)]
        if cols == 1:   # the whole model: each evaluation's gradient rides in the sum of its loss
            col_calls = [(d * k + k + 2 + rows, T)]
        block = (d / cols + 1) * k
        loss_work = T * r * k
    else:
        row_calls = [(r, T), (2 * r + cols, T), (1, T), (3, 1.0), (gram, 1.0)] if cols > 1 else []
        col_calls = [(2 + rows, T), ((d + 1) * k / cols + rows, 1.0)]
        block = (d + 1) * k / cols
        loss_work = T * r * (k / cols + 3)
    sent = seconds = 0.0
    for calls, q in ((row_calls, cols), (col_calls, rows)):
        for words, times in calls:
            b, t = allreduce_cost(words, q, params)
            sent, seconds = sent + times * b, seconds + times * t
    passes = 1 + (T if cols == 1 else 1)   # X p, and X^T r per evaluation (whole model) or per iteration
    compute = (machine.iteration_seconds + passes * problem.nnz * k / (rows * cols) * machine.nnz_seconds
               + loss_work * machine.row_seconds + block * LBFGS_PASSES / 8 * machine.param_seconds)
    parallel = "data" if cols == 1 else ("model" if rows == 1 else "hybrid")
    words = (sum(w * t for w, t in row_calls), sum(w * t for w, t in col_calls))
    return Estimate(parallel, rows, cols, split, sent, seconds, compute, words, block * LBFGS_VECTORS * WORD)


def estimates(problem: Problem, machine: Machine = Machine(), strategy: str = "sync") -> list[Estimate]:
    """Every layout of ``problem`` (grids of any shape; the classes split for softmax), cheapest first.

    ``strategy``: ``"sync"`` prices one SGD update, ``"lbfgs"`` one L-BFGS iteration.
    """
    price = estimate_lbfgs if strategy == "lbfgs" else estimate
    out = []
    for rows, cols in factorizations(problem.p):
        for split in ("features", "classes") if problem.k > 1 else ("features",):
            limit = problem.d if split == "features" else problem.k
            if cols > 1 and cols > limit:
                continue
            if split == "classes" and cols == 1:
                continue  # the same as the features split on p x 1 (data parallelism)
            out.append(price(problem, rows, cols, split, machine))
    return sorted(out, key=lambda e: e.seconds_per_step)


def choose(problem: Problem, parallel: str = "auto", machine: Machine = Machine(),
           strategy: str = "sync") -> Estimate:
    """The cheapest layout of kind ``parallel`` (``auto``: of any kind) for ``strategy`` (sync or lbfgs)."""
    every = estimates(problem, machine, strategy)
    wanted = [e for e in every if parallel == "auto" or e.parallel == parallel]
    if not wanted:  # e.g. hybrid at p = 2 or a prime p: there is no such grid
        from mpiml.errors import ArgumentError

        raise ArgumentError(f"no {parallel} layout for {problem.p} ranks (a hybrid grid needs p = R x C, R, C > 1)")
    return wanted[0]


def explain(problem: Problem, chosen: Estimate, machine: Machine = Machine(), strategy: str = "sync") -> str:
    """A table of every layout's bytes and seconds per update (``lbfgs``: per iteration), the chosen one marked."""
    lbfgs = strategy == "lbfgs"
    if lbfgs:
        head = (f"per-iteration cost estimates (lbfgs, full batch): n={problem.n} d={problem.d} nnz={problem.nnz} "
                f"outputs={problem.k} p={problem.p}")
    else:
        head = (f"per-update cost estimates: n={problem.n} d={problem.d} nnz={problem.nnz} outputs={problem.k} "
                f"batch={problem.batch} p={problem.p}")
    unit = "bytes/iter" if lbfgs else "bytes/step"
    lines = [head, f"  {'layout':<8} {'grid':<6} {'split':<9} {unit:>12} {'comm_ms':>9} {'compute_ms':>10} "
                   f"{'total_ms':>9}" + (f" {'model_MB/rank':>13}" if lbfgs else "")]
    for e in estimates(problem, machine, strategy):
        mark = "*" if (e.rows, e.cols, e.split) == (chosen.rows, chosen.cols, chosen.split) else " "
        lines.append(f"{mark} {e.parallel:<8} {e.grid:<6} {e.split:<9} {e.bytes_per_step:>12.0f} "
                     f"{1e3 * e.comm_seconds:>9.3f} {1e3 * e.compute_seconds:>10.3f} {1e3 * e.seconds_per_step:>9.3f}"
                     + (f" {e.model_bytes / 2**20:>13.1f}" if lbfgs else ""))
    lines.append("(* chosen; communication priced by mpiml.collectives.model)")
    return "\n".join(lines)
