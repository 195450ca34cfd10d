"""The one training loop of mpiml's linear models, for every layout of the ranks.

A :class:`Run` holds this rank's block of the parameters (the whole model under data
parallelism), its optimizer state, the update counters and the history, and does all
that does not depend on how the model and the rows are laid out over the ranks: update
counting, learning rates and the update itself (penalty, optimizer, proximal step),
evaluation with one block size, the consensus model, checkpoints, divergence errors and
stop votes. :mod:`mpiml.train.strategies` drive it (the epoch loop, sync, local,
oneshot, lbfgs). What depends on the layout comes from a *layout* object
(:class:`mpiml.parallel.trainer.GridLayout`; a data-parallel run is its ``p x 1`` grid):

- ``model``; ``n_params``, ``n_weights``: the size of this rank's block and of its
  penalized part (the leading entries); ``init_params()``;
- ``data``: the :class:`~mpiml.train.group.Group` of the *replicas*, the ranks holding
  other rows of the same block (all ranks under data parallelism, a column group of a grid);
- ``batch(theta, X, y, rows, grad, vote) -> (loss, vote)``: the summed loss of rows
  ``rows`` of ``X``, their summed gradient added to ``grad`` (this block), and ``vote``
  summed over the ranks that share these rows (a grid's row group; itself otherwise);
- ``evaluate(theta, X, y) -> (loss, correct)``: summed loss and correct predictions;
- ``model_sum(x)``: a sum over the ranks that hold the other blocks of the model;
- ``whole(theta)``: the whole parameter vector of which ``theta`` is this rank's block;
- ``save_state(run)``, ``load_state(run)``: checkpoints of the whole model;
- ``objective(run) -> (objective, blocks)``: the full-batch objective for
  :func:`mpiml.train.lbfgs_math.minimize`;
- ``attach(exchanger)``: the run's :class:`~mpiml.train.timing.Exchanger`, through which
  the layout times its own compute and reductions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from mpiml.collectives import reproducible as exact
from mpiml.errors import DivergenceError
from mpiml.train import reproducible
from mpiml.train.config import TrainConfig, resolve_strategy
from mpiml.train.optim import Penalty, learning_rate, make_optimizer
from mpiml.train.plan import row_block, row_blocks
from mpiml.train.strategies import make_strategy
from mpiml.train.timing import Clock, Exchanger, Timings

BLOCK_VALUES = 1 << 22  # rows x outputs per block of full-batch work: 32 MB of scores at a time


@dataclass
class TrainResult:
    """What :func:`train` returns (identical on every rank except ``timings`` and ``block``)."""

    theta: np.ndarray
    history: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    updates: int = 0
    interrupted: bool = False
    resumed_from: int | None = None
    block: np.ndarray | None = None   # this rank's block of theta as it ended (before any averaging)
    bytes_moved: int = 0   # bytes this rank sent in the replica exchanges (Exchanger.bytes_moved)
    bytes_dense: int = 0   # what dense allreduces of them would have sent


class Run:
    """State of one training run on this rank, and the steps every strategy and layout share."""

    def __init__(self, layout, X, y, config: TrainConfig, test=None, checkpoint_dir=None, progress=None,
                 stop_requested=None):
        self.layout, self.model = layout, layout.model
        self.X, self.y, self.cfg, self.test = X, y, config, test
        self.checkpoint_dir, self.progress = checkpoint_dir, progress
        self.strategy = make_strategy(config.strategy, config.compress, config.backup)
        self.timings = Timings()
        self.data = layout.data
        self.ex = Exchanger(self.data, self.timings, stop_requested)
        layout.attach(self.ex)
        self.penalty = Penalty(config.alpha, config.l1_ratio)
        self.n_local = X.shape[0]
        self.reproducible = config.reproducible
        if self.reproducible:
            reproducible.check_layout(getattr(layout, "whole_model", True))
            tops = reproducible.Bounds.local_tops(self.model, X, y)
            # L-BFGS sums each X^T r column by column from a CSC copy of sparse rows: made once, here
            self.columns = X.tocsc() if hasattr(X, "indptr") and config.strategy == "lbfgs" else None
            counts = reproducible.global_counts(self.data, X, test, tops, self.columns)
            self.offset, self.n_total, self.n_test_total, self.column_count, maxima = counts
            if maxima is None:   # too many to carry in the counts' sum: a max-reduction of their own
                maxima = self.data.maximum(tops, out=tops)
            self.bounds = reproducible.Bounds(self.model, maxima)
        else:
            self.offset, self.n_total = self.data.exscan_count(self.n_local)
        self.theta = layout.init_params()
        self.opt = make_optimizer(config.optimizer, layout.n_params, config.momentum, config.nesterov)
        self.grad = np.zeros(layout.n_params)
        self.t = self.epoch = self.step = 0
        self.history: list = []
        self.last_checkpoint = None

    # -- one update ---------------------------------------------------------------------
    def batch(self, row_sets, grad) -> tuple[float, float]:
        """Summed loss of the row sets (micro-batches), their summed gradient added to ``grad``,
        and the stop votes of the ranks that share these rows (every set is passed on, empty
        ones too: on a grid each carries the votes through its row group)."""
        loss, vote = 0.0, self.ex.vote()
        votes = vote
        for rows in row_sets:
            part, votes = self.layout.batch(self.theta, self.X, self.y, rows, grad, vote)
            loss += part
        return loss, votes

    def exact_batch(self, row_sets, count: int) -> np.ndarray:
        """Reproducible mode's :meth:`batch` and exchange in one: ``[gradient sum, loss sum]`` over every
        rank, exact (``count``: the rows of the global update, a bound on the terms per element)."""
        n = self.layout.n_params
        start = time.perf_counter()
        terms = exact.Sum(n + 1, count)
        for rows in row_sets:
            if len(rows):
                reproducible.add_batch(self.model, self.theta, self.X[rows], self.y[rows], terms, n)
        top = self.bounds.top(self.theta, n + 1)
        self.ex.add_compute(time.perf_counter() - start)
        return self.ex.exact(terms, top)

    def update(self, grad, lr) -> None:
        """Penalty gradient, optimizer step, then the L1 proximal step (this rank's block)."""
        w = self.layout.n_weights
        self.penalty.add_smooth_grad(self.theta[:w], grad[:w])
        self.opt.step(self.theta, grad, lr)
        self.penalty.prox(self.theta[:w], lr)

    def lr(self, total_steps) -> float:
        c = self.cfg
        return learning_rate(c.schedule, c.lr, self.t, total_steps, c.lr_decay)

    def diverged(self, what) -> DivergenceError:
        """The error for a non-finite value, raised only on numbers every rank holds alike
        (sums over all ranks), so every rank raises it at the same point."""
        return DivergenceError(
            f"training diverged at epoch {self.epoch + 1}, update {self.t}: {what} is not finite "
            f"(lr={self.cfg.lr}, optimizer={self.cfg.optimizer}); lower --lr or raise --reg"
            + (f"; the last good checkpoint ({self.last_checkpoint}) is intact" if self.last_checkpoint else ""),
            collective=True)

    def count_update(self, steps, batch_loss, stop_at) -> bool:
        """Count an update; checkpoint or stop where asked. True means stop now.

        ``stop_at`` is an update number (``--stop-after-updates``); the ranks' stop votes
        arrive with the exchanges (:attr:`Exchanger.stop_agreed`).
        """
        self.t += 1
        self.step += 1
        if self.progress is not None:
            self.progress.update(self.epoch, self.step, steps, batch_loss)
        every = self.cfg.checkpoint_every
        stopping = (stop_at is not None and self.t >= stop_at) or self.ex.stop_agreed
        if self.step < steps and (stopping or (every and self.t % every == 0)):
            self.checkpoint()
        return stopping and self.step < steps

    # -- the model all ranks agree on, its metrics, checkpoints ----------------------------
    def consensus(self, averaged: bool | None = None):
        """This rank's block of the model every rank agrees on: theta itself, or the average of
        the replicas' models (``averaged``; default: whether the strategy keeps them apart)."""
        averaged = self.strategy.averaged if averaged is None else averaged
        if not averaged or self.data.size == 1:
            return self.theta
        with Clock(self._add_eval):
            buf = self.theta.copy()
            self.data.allreduce(buf, out=buf)
            return buf / self.data.size

    def evaluate(self, theta) -> dict:
        """Objective and accuracy of ``theta`` on the training and held-out rows of every rank.

        Carries the stop votes too (through both groups of a grid), so that ``oneshot``
        stops at the end of the epoch in which a rank was asked to.
        """
        if self.reproducible:
            return self._evaluate_exact(theta)
        with Clock(self._add_eval):
            sets = [(self.X, self.y)] + ([self.test] if self.test is not None else [])
            shared = self.layout.model_sum(np.array([self.penalty.value(theta[: self.layout.n_weights]),
                                                     self.ex.vote()]))
            buf = np.zeros(3 * len(sets) + 1)
            buf[-1] = shared[1]
            for i, (X, y) in enumerate(sets):
                for lo, hi in row_blocks(X.shape[0], BLOCK_VALUES // self.model.k):
                    loss, correct = self.layout.evaluate(theta, row_block(X, lo, hi), y[lo:hi])
                    buf[3 * i] += loss
                    buf[3 * i + 1] += correct
                buf[3 * i + 2] = X.shape[0]
            # the ranks sharing rows hold the same sums: summing over the replicas counts each row once
            self.data.allreduce(buf, out=buf)
            self.ex.stop_agreed = self.ex.stop_agreed or buf[-1] > 0
            record = {"epoch": self.epoch + 1, "updates": self.t}
            for i, name in enumerate(("train", "test")[: len(sets)]):
                rows = max(buf[3 * i + 2], 1.0)
                # train_loss is the objective (mean loss + penalty); test_loss the mean loss alone
                record[f"{name}_loss"] = buf[3 * i] / rows + (float(shared[0]) if name == "train" else 0.0)
                if self.model.classifier:
                    record[f"{name}_accuracy"] = buf[3 * i + 1] / rows
        if not math.isfinite(record["train_loss"]):
            raise self.diverged("the training loss")
        return record

    def _evaluate_exact(self, theta) -> dict:
        """:meth:`evaluate` with exact sums (reproducible mode; data parallelism)."""
        with Clock(self._add_eval):
            sets = [(self.X, self.y, self.n_total)]
            if self.test is not None:
                sets.append((*self.test, self.n_test_total))
            terms = exact.Sum(2 * len(sets), max(self.n_total, self.n_test_total, 1))
            W, b = self.model.split(theta)
            for i, (X, y, _) in enumerate(sets):
                correct = 0
                for lo, hi in row_blocks(X.shape[0], BLOCK_VALUES // self.model.k):
                    s = reproducible.scores(W, b, row_block(X, lo, hi))
                    terms.add_rows(self.model.row_line_loss(s, None, 0.0, y[lo:hi])[1], 2 * i)
                    correct += self.model.correct_scores(s, y[lo:hi])
                terms.add_rows(np.array([float(correct)]), 2 * i + 1)
            # the training rows' bounds hold the held-out rows' losses too, unless their features are larger:
            # then the flag of the one reduction sends every rank to the two-pass sum
            top = self.bounds.metric_tops(theta, [count for _, _, count in sets])
            sums, votes = reproducible.one_pass(terms, top, self.data.maximum, self.data.allreduce, [self.ex.vote()])
            self.ex.stop_agreed = self.ex.stop_agreed or votes[0] > 0
            record = {"epoch": self.epoch + 1, "updates": self.t}
            penalty = self.penalty.value(theta[: self.layout.n_weights])
            for i, name in enumerate(("train", "test")[: len(sets)]):
                rows = max(float(sets[i][2]), 1.0)
                record[f"{name}_loss"] = sums[2 * i] / rows + (penalty if name == "train" else 0.0)
                if self.model.classifier:
                    record[f"{name}_accuracy"] = sums[2 * i + 1] / rows
        if not math.isfinite(record["train_loss"]):
            raise self.diverged("the training loss")
        return record

    def checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        with Clock(self._add_checkpoint):
            self.last_checkpoint = self.layout.save_state(self)

    def _add_eval(self, seconds):
        self.timings.eval += seconds

    def _add_checkpoint(self, seconds):
        self.timings.checkpoint += seconds


def train(layout, X, y, config: TrainConfig, test=None, checkpoint_dir=None, resume=False, stop_at_update=None,
          progress=None, stop_requested=None) -> TrainResult:
    """Train ``layout.model`` with this rank's rows ``(X, y)``, laid out by ``layout``.

    Parameters
    ----------
    layout : object
        This rank's part of the layout (see the module docstring): :func:`mpiml.sgd.train`
        and :func:`mpiml.parallel.train_grid` make one.
    X, y : array or CSR matrix, numpy.ndarray
        This rank's rows, as the layout wants them (its block of the columns on a grid);
        ``y`` already encoded by the model. The replicas' rows are consecutive blocks of the
        global rows in replica order (that fixes the global row numbering ``sync`` uses).
    config : TrainConfig
        Strategy ``auto`` is resolved here by :func:`mpiml.train.config.resolve_strategy`.
    test : tuple, optional
        ``(X_test, y_test)`` held-out rows of this rank, evaluated every epoch.
    checkpoint_dir : path, optional
        Rank 0 writes checkpoints there (every epoch, every ``checkpoint_every`` updates,
        and at the end). With ``resume``, training continues from the latest one.
    stop_at_update : int, optional
        Checkpoint and return after this many updates (``interrupted=True``): how an
        interruption is simulated, and how a time limit stops cleanly.
    progress : Progress, optional
        Told ``update(epoch, step, steps, batch_loss)`` after every update and
        ``epoch(record)`` after every epoch (pass one on rank 0 only).
    stop_requested : callable, optional
        ``stop_requested() -> bool`` on this rank (e.g. a signal arrived). The ranks'
        votes travel with the next exchange; all then stop after the same update,
        checkpoint, and return ``interrupted=True``. ``sync`` stops after the current
        update, ``local`` at the next model average, ``oneshot`` at the end of the epoch;
        ``lbfgs`` runs to the end.

    Returns
    -------
    TrainResult
        ``theta`` is the whole parameter vector, the same on every rank (after an
        interruption of ``local``/``oneshot``: a replica's model, not their average).
    """
    config.validate()
    if reproducible.requested(config.reproducible) != config.reproducible:
        config = replace(config, reproducible=True)
    if config.strategy == "auto":
        model = layout.model
        config = replace(config, strategy=resolve_strategy(model.name, config.l1_ratio,
                                                           getattr(model, "squared", False)))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite values end in DivergenceError
        layout.model.warm()  # load the compiled kernels before any clock runs
        run = Run(layout, X, y, config, test, checkpoint_dir, progress, stop_requested)
        resumed = layout.load_state(run) if resume and checkpoint_dir is not None else None
        interrupted = run.strategy.train(run, resumed, stop_at_update)
        theta = layout.whole(run.theta if interrupted else run.consensus())
    return TrainResult(theta, run.history, run.timings, run.t, interrupted, resumed, run.theta.copy(),
                       run.ex.bytes_moved, run.ex.bytes_dense)
