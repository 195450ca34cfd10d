"""The training loop: strategies, per-epoch metrics, checkpoints, divergence checks.

All collective work goes through the injected :class:`~mpiml.sgd.group.Group`, so the
serial run (``Group.serial()``) executes exactly this code with p = 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from mpiml.runtime.errors import DivergenceError
from mpiml.sgd import plan
from mpiml.sgd.checkpointing import load_state, save_state
from mpiml.sgd.config import TrainConfig, resolve_strategy
from mpiml.sgd.models import Model, Penalty, row_block
from mpiml.sgd.optim import learning_rate, make_optimizer
from mpiml.sgd.timing import Clock, Exchanger, Timings


BLOCK_VALUES = 1 << 22  # rows x outputs per block of full-batch work: 32 MB of scores at a time


@dataclass
class TrainResult:
    """What :func:`train` returns (identical on every rank except ``timings``)."""

    theta: np.ndarray
    history: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    updates: int = 0
    interrupted: bool = False
    resumed_from: int | None = None


class _Run:
    """State of one training run on this rank."""

    def __init__(self, model: Model, X, y, config: TrainConfig, group, test=None,
                 checkpoint_dir=None, progress=None, stop_requested=None):
        self.model, self.X, self.y, self.cfg, self.group = model, X, y, config, group
        self.test = test
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress
        self.penalty = Penalty(config.alpha, config.l1_ratio)
        self.timings = Timings()
        self.ex = Exchanger(group, self.timings, stop_requested)
        self.n_local = X.shape[0]
        self.offset, self.n_total = group.exscan_count(self.n_local)
        self.theta = model.init_params()
        self.opt = make_optimizer(config.optimizer, model.n_params, config.momentum, config.nesterov)
        self.t = 0
        self.epoch = 0
        self.step = 0
        self.history: list = []
        self.last_checkpoint = None
        self.grad = np.zeros(model.n_params)

    # -- math helpers -----------------------------------------------------------------
    def local_sum(self, theta, rows_list, grad):
        """Loss sum over row sets (index arrays or slices), gradient sum added to ``grad``."""
        loss = 0.0
        for rows in rows_list:
            if isinstance(rows, slice) or len(rows):
                loss += self.model.loss_grad(theta, self.X[rows], self.y[rows], grad)
        return loss

    def update(self, grad, lr):
        """Penalty gradient, optimizer step, then the L1 proximal step."""
        self.penalty.add_smooth_grad(self.model.weights(self.theta), self.model.weights(grad))
        self.opt.step(self.theta, grad, lr)
        self.penalty.prox(self.model.weights(self.theta), lr)

    def lr(self, total_steps):
        c = self.cfg
        return learning_rate(c.schedule, c.lr, self.t, total_steps, c.lr_decay)

    def diverged(self, what):
        """The error for a non-finite value, which every rank sees alike (it comes out of an allreduce)."""
        return DivergenceError(
            f"training diverged at epoch {self.epoch + 1}, update {self.t}: {what} is not finite "
            f"(lr={self.cfg.lr}, optimizer={self.cfg.optimizer}); lower --lr or raise --alpha"
            + (f"; the last good checkpoint ({self.last_checkpoint}) is intact" if self.last_checkpoint else ""),
            collective=True)

    # -- strategies ---------------------------------------------------------------------
    def sync_epoch(self, stop_at):
        c = self.cfg
        update_rows = c.batch_size * c.accumulate
        steps = plan.sync_steps(self.n_total, update_rows)
        total = steps * c.epochs
        rows, bounds, positions = plan.sync_plan(c.seed, self.epoch, self.n_total, self.offset,
                                                 self.n_local, update_rows)
        n = self.model.n_params
        buf = self.ex.buffer(n + 1)
        while self.step < steps:
            s = self.step
            start = time.perf_counter()
            part, pos = rows[bounds[s]:bounds[s + 1]], positions[bounds[s]:bounds[s + 1]] - s * update_rows
            cuts = np.searchsorted(pos // c.batch_size, np.arange(1, c.accumulate))
            buf[:] = 0.0
            buf[n] = self.local_sum(self.theta, np.split(part, cuts), buf[:n])
            self.ex.add_compute(time.perf_counter() - start)
            payload = self.ex.allreduce(buf)
            start = time.perf_counter()
            count = min(update_rows, self.n_total - s * update_rows)
            if not np.isfinite(payload).all():
                raise self.diverged("the batch loss or gradient")
            np.divide(payload[:n], count, out=self.grad)
            self.update(self.grad, self.lr(total))
            self.ex.add_compute(time.perf_counter() - start)
            if self.after_update(steps, payload[n] / count, stop_at):
                return True
        return False

    def local_epoch(self, stop_at):
        c = self.cfg
        update_rows = c.batch_size * c.accumulate
        steps = plan.local_steps(self.n_total, self.group.size, update_rows)
        total = steps * c.epochs
        order = plan.local_order(c.seed, self.epoch, self.group.rank, self.group.size, self.n_local)
        H = c.sync_every if c.strategy == "local" else None
        n = self.model.n_params
        loss_since = 0.0
        while self.step < steps:
            start = time.perf_counter()
            rows = plan.local_rows(order, self.step, update_rows)
            self.grad[:] = 0.0
            loss = self.local_sum(self.theta, np.array_split(rows, c.accumulate), self.grad)
            self.grad /= update_rows
            self.update(self.grad, self.lr(total))
            loss_since += loss / update_rows
            self.ex.add_compute(time.perf_counter() - start)
            if H is not None and (self.t + 1) % H == 0:
                buf = self.ex.buffer(n + 1)
                buf[:n], buf[n] = self.theta, loss_since
                payload = self.ex.allreduce(buf)
                if not np.isfinite(payload).all():
                    raise self.diverged("the averaged model")
                np.divide(payload[:n], self.group.size, out=self.theta)
                loss_since = 0.0
            if self.after_update(steps, None, stop_at):
                return True
        return False

    def after_update(self, steps, batch_loss, stop_at):
        return count_update(self, steps, batch_loss, stop_at, self.ex.stop_agreed)

    # -- averaging, metrics, checkpoints --------------------------------------------------
    def consensus(self):
        """The model all ranks agree on: theta itself, or the average of the local models."""
        if self.cfg.strategy in ("sync", "lbfgs") or self.group.size == 1:
            return self.theta
        with Clock(self._add_eval):
            buf = self.theta.copy()
            self.group.allreduce(buf, out=buf)
            return buf / self.group.size

    def _add_eval(self, seconds):
        self.timings.eval += seconds

    def evaluate(self, theta) -> dict:
        """Objective and accuracy on the training rows and the held-out rows, over all ranks."""
        with Clock(self._add_eval):
            sets = [(self.X, self.y)] + ([self.test] if self.test is not None else [])
            buf = np.zeros(3 * len(sets) + 1)
            buf[-1] = 1.0 if self.ex.stop_requested() else 0.0
            rows = max(BLOCK_VALUES // self.model.k, 1)
            for i, (X, y) in enumerate(sets):
                for lo in range(0, X.shape[0], rows):
                    Xb, yb = row_block(X, lo, lo + rows), y[lo:lo + rows]
                    buf[3 * i] += self.model.loss(theta, Xb, yb)
                    buf[3 * i + 1] += self.model.correct(theta, Xb, yb)
                buf[3 * i + 2] = X.shape[0]
            self.group.allreduce(buf, out=buf)
            self.ex.stop_agreed = self.ex.stop_agreed or buf[-1] > 0
            pen = self.penalty.value(self.model.weights(theta))
            record = {"epoch": self.epoch + 1, "updates": self.t}
            for i, name in enumerate(("train", "test")[: len(sets)]):
                rows = max(buf[3 * i + 2], 1.0)
                # train_loss is the objective (mean loss + penalty); test_loss the mean loss alone
                record[f"{name}_loss"] = buf[3 * i] / rows + (pen if name == "train" else 0.0)
                if self.model.classifier:
                    record[f"{name}_accuracy"] = buf[3 * i + 1] / rows
        if not math.isfinite(record["train_loss"]):
            raise self.diverged("the training loss")
        return record

    def checkpoint(self):
        if self.checkpoint_dir is None:
            return
        with Clock(self._add_checkpoint):
            self.last_checkpoint = save_state(self)

    def _add_checkpoint(self, seconds):
        self.timings.checkpoint += seconds

    def lbfgs(self):
        """Full-batch L-BFGS (scipy) on the allreduced objective; every rank runs the same iterations."""
        from mpiml.sgd import lbfgs

        n = self.model.n_params
        blocks = [(row_block(self.X, lo, hi), self.y[lo:hi]) for lo, hi in self.blocks()]
        blocks = [(X, X.T, y) for X, y in blocks]  # every evaluation reuses the transposes
        trace, times = [], []
        start_all = time.perf_counter()

        def objective(theta):
            start = time.perf_counter()
            buf = self.ex.buffer(n + 1)
            loss = 0.0
            for X, XT, y in blocks:
                loss += self.model.loss_grad(theta, X, y, buf[:n], XT)
            buf[n] = loss
            self.ex.add_compute(time.perf_counter() - start)
            payload = self.ex.allreduce(buf)
            start = time.perf_counter()
            grad = payload[:n] / self.n_total
            w = self.model.weights(theta)
            self.penalty.add_smooth_grad(w, self.model.weights(grad))
            value = payload[n] / self.n_total + self.penalty.value(w)
            self.ex.add_compute(time.perf_counter() - start)
            if not math.isfinite(value):
                raise self.diverged("the objective")
            return value, grad

        def callback(intermediate_result):
            trace.append(float(intermediate_result.fun))
            times.append(time.perf_counter() - start_all)
            self.t += 1
            if self.progress is not None:
                self.progress.update(self.epoch, min(self.t, self.cfg.max_iter), self.cfg.max_iter, trace[-1])

        result = lbfgs.run(objective, self.theta, self.cfg.max_iter, self.cfg.tol, callback)
        self.theta = np.ascontiguousarray(result.x)
        return {"lbfgs_iterations": int(result.nit), "lbfgs_evaluations": int(result.nfev),
                "lbfgs_converged": bool(result.success), "lbfgs_message": str(result.message),
                "lbfgs_objective": trace, "lbfgs_seconds": times}

    def blocks(self):
        """Row ranges whose scores and residuals (rows x outputs doubles) stay within BLOCK_VALUES."""
        rows = max(BLOCK_VALUES // self.model.k, 1)
        return [(lo, min(lo + rows, self.n_local)) for lo in range(0, self.n_local, rows)] or [(0, 0)]


def train(model: Model, X, y, config: TrainConfig, group, test=None, checkpoint_dir=None,
          resume=False, stop_at_update=None, progress=None, stop_requested=None) -> TrainResult:
    """Train ``model`` on this rank's shard ``(X, y)`` with the ranks of ``group``.

    Parameters
    ----------
    model : Model
        From :func:`mpiml.sgd.models.make_model`; ``y`` already encoded by it.
    X, y : array or CSR matrix, numpy.ndarray
        This rank's rows; shards are taken to be consecutive blocks of the global data in
        rank order (that fixes the global row numbering that ``sync`` batches use).
    config : TrainConfig
        Strategy ``auto`` is resolved here by :func:`mpiml.sgd.config.resolve_strategy`.
    group : Group
        Rank, size and the injected allreduce.
    test : tuple, optional
        ``(X_test, y_test)`` held-out rows of this rank, evaluated every epoch.
    checkpoint_dir : path, optional
        Rank 0 writes checkpoints there (every epoch, every ``checkpoint_every`` updates,
        and at the end). With ``resume``, training continues from the latest one.
    stop_at_update : int, optional
        Checkpoint and return after this many updates (``interrupted=True``): how an
        interruption is simulated, and how a time limit stops cleanly.
    stop_requested : callable, optional
        ``stop_requested() -> bool`` on this rank (e.g. a signal arrived). The ranks'
        votes travel with the next exchange; all then stop after the same update,
        checkpoint, and return ``interrupted=True``. ``sync`` stops after the current
        update, ``local`` at the next model average, ``oneshot`` at the end of the epoch;
        ``lbfgs`` runs to the end.
    progress : Progress, optional
        Told ``update(epoch, step, steps, batch_loss)`` after every update and
        ``epoch(record)`` after every epoch (pass one on rank 0 only).

    Returns
    -------
    TrainResult
    """
    config.validate()
    if config.strategy == "auto":
        strategy = resolve_strategy(model.name, config.l1_ratio, getattr(model, "squared", False))
        config = replace(config, strategy=strategy)
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite values end in DivergenceError
        return _train(model, X, y, config, group, test, checkpoint_dir, resume, stop_at_update, progress,
                      stop_requested)


def _train(model, X, y, config, group, test, checkpoint_dir, resume, stop_at_update, progress, stop_requested):
    if model.kind is not None:  # load the compiled kernel before any clock runs
        model.pointwise(np.zeros(1), np.zeros(1), np.zeros(1))
    run = _Run(model, X, y, config, group, test, checkpoint_dir, progress, stop_requested)
    resumed = load_state(run) if resume and checkpoint_dir is not None else None
    if config.strategy == "lbfgs":
        return _train_lbfgs(run, resumed)
    interrupted = run_epochs(run, config, stop_at_update, progress, lambda: run.ex.stop_agreed)
    theta = run.theta if interrupted else run.consensus()
    return TrainResult(theta.copy(), run.history, run.timings, run.t, interrupted, resumed)


def count_update(run, steps, batch_loss, stop_at, stop_agreed: bool) -> bool:
    """Count an update of ``run``; checkpoint or stop where asked. True means stop now.

    Shared by the data-parallel and the grid trainers: ``stop_at`` is an update number
    (``--stop-after-updates``), ``stop_agreed`` the ranks' vote after a stop signal.
    """
    run.t += 1
    run.step += 1
    if run.progress is not None:
        run.progress.update(run.epoch, run.step, steps, batch_loss)
    every = run.cfg.checkpoint_every
    stopping = (stop_at is not None and run.t >= stop_at) or stop_agreed
    if run.step < steps and (stopping or (every and run.t % every == 0)):
        run.checkpoint()
    return stopping and run.step < steps


def run_epochs(run, config, stop_at_update, progress, stop_agreed) -> bool:
    """The epoch loop of the data-parallel and the grid trainers; True if interrupted.

    ``run`` provides ``sync_epoch``/``local_epoch`` (True when stopped mid-epoch),
    ``evaluate``, ``consensus``, ``checkpoint``, ``history``, ``timings``, ``epoch``,
    ``step`` and ``t``; ``stop_agreed()`` says whether the ranks voted to stop.
    Checkpoint writing is kept out of the epoch times; a resumed run's clock continues.
    """
    elapsed = run.history[-1].get("seconds", 0.0) if run.history else 0.0
    while run.epoch < config.epochs:
        epoch_fn = run.sync_epoch if config.strategy == "sync" else run.local_epoch
        start, saving = time.perf_counter(), run.timings.checkpoint
        if epoch_fn(stop_at_update):
            return True
        epoch_seconds = time.perf_counter() - start - (run.timings.checkpoint - saving)
        elapsed += epoch_seconds
        record = run.evaluate(run.consensus())
        record.update(epoch_seconds=epoch_seconds, seconds=elapsed)
        run.history.append(record)
        if progress is not None:
            progress.epoch(record)
        run.epoch += 1
        run.step = 0
        run.checkpoint()
        if (stop_at_update is not None and run.t >= stop_at_update) or stop_agreed():
            return run.epoch < config.epochs
    return False


def _train_lbfgs(run: _Run, resumed) -> TrainResult:
    cfg = run.cfg
    elapsed = 0.0
    start = time.perf_counter()
    if cfg.warm_start_epochs and resumed is None:
        # Vowpal Wabbit's recipe: an averaged SGD pass gives L-BFGS a good start.
        warm = TrainConfig(**{**cfg.as_dict(), "strategy": "oneshot", "epochs": cfg.warm_start_epochs,
                              "checkpoint_every": 0})  # no per-rank checkpoints of the warm start
        saved_cfg, run.cfg = run.cfg, warm
        while run.epoch < warm.epochs:
            run.local_epoch(None)
            run.epoch += 1
            run.step = 0
        run.theta = run.consensus().copy()
        run.cfg = saved_cfg
        elapsed = time.perf_counter() - start
        run.history.append({**run.evaluate(run.theta), "phase": "warm_start", "seconds": elapsed})
    start = time.perf_counter()
    extra = run.lbfgs()
    elapsed += time.perf_counter() - start
    record = run.evaluate(run.theta)
    record.update(epoch=len(run.history) + 1, seconds=elapsed, **extra)
    run.history.append(record)
    if run.progress is not None:
        run.progress.epoch(record)
    run.epoch = cfg.epochs
    run.checkpoint()
    return TrainResult(run.theta.copy(), run.history, run.timings, run.t, False, resumed)
