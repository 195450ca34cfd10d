"""The training strategies: how the replicas (ranks holding other rows) combine their work.

Each is a small class that drives a :class:`mpiml.train.loop.Run`, whatever the layout:

- :class:`Sync`: one sum of the batch gradient over the replicas per update;
- :class:`Local`: local updates, the replicas' models averaged every ``sync_every``;
- :class:`OneShot`: local updates, one average at the end;
- :class:`LBFGS`: full-batch L-BFGS (:mod:`mpiml.train.lbfgs_math`) on the layout's objective.

The SGD strategies share :meth:`Strategy.train` (the epoch loop: evaluation, checkpoints,
stops). Variants slot in as subclasses without another loop: a compressed or
error-feedback gradient exchange overrides :meth:`Sync.exchange` (the one place a
gradient crosses ranks); asynchronous or bounded-staleness averaging overrides
:meth:`Local.average` (and :attr:`Strategy.averaged` says the replicas' models differ).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.train import lbfgs_math, plan


class Strategy:
    """Base: the epoch loop of the SGD strategies; a subclass gives :meth:`epoch`."""

    name = ""
    averaged = False   # the replicas hold different models between exchanges (averaged for the consensus)

    def train(self, run, resumed, stop_at) -> bool:
        """Epochs until ``run.cfg.epochs``, evaluating and checkpointing after each; True if interrupted.

        Checkpoint writing is kept out of the epoch times; a resumed run's clock continues.
        """
        cfg = run.cfg
        elapsed = run.history[-1].get("seconds", 0.0) if run.history else 0.0
        while run.epoch < cfg.epochs:
            start, saving = time.perf_counter(), run.timings.checkpoint
            if self.epoch(run, stop_at):
                return True
            epoch_seconds = time.perf_counter() - start - (run.timings.checkpoint - saving)
            elapsed += epoch_seconds
            record = run.evaluate(run.consensus())
            record.update(epoch_seconds=epoch_seconds, seconds=elapsed)
            run.history.append(record)
            if run.progress is not None:
                run.progress.epoch(record)
            run.epoch += 1
            run.step = 0
            run.checkpoint()
            if (stop_at is not None and run.t >= stop_at) or run.ex.stop_agreed:
                return run.epoch < cfg.epochs
        return False

    def epoch(self, run, stop_at) -> bool:
        """One epoch from ``run.step``; True when stopped before its end."""
        raise NotImplementedError


class Sync(Strategy):
    """Every update: one global batch (the same at any rank count), its gradient summed over the replicas."""

    name = "sync"

    def epoch(self, run, stop_at) -> bool:
        c = run.cfg
        update_rows = c.batch_size * c.accumulate
        steps = plan.sync_steps(run.n_total, update_rows)
        total = steps * c.epochs
        rows, bounds, positions = plan.sync_plan(c.seed, run.epoch, run.n_total, run.offset, run.n_local,
                                                 update_rows)
        n = run.layout.n_params
        buf = run.ex.buffer(n + 1)
        while run.step < steps:
            s = run.step
            start = time.perf_counter()
            part, pos = rows[bounds[s]:bounds[s + 1]], positions[bounds[s]:bounds[s + 1]] - s * update_rows
            cuts = np.searchsorted(pos // c.batch_size, np.arange(1, c.accumulate))
            if run.reproducible:   # the update's sums, exact: the same at any rank count
                run.ex.add_compute(time.perf_counter() - start)
                payload = run.exact_batch(np.split(part, cuts), update_rows)
            else:
                buf[:] = 0.0
                run.ex.add_compute(time.perf_counter() - start)
                buf[n], vote = run.batch(np.split(part, cuts), buf[:n])
                payload = self.exchange(run, buf, vote)
            start = time.perf_counter()
            count = min(update_rows, run.n_total - s * update_rows)
            if not math.isfinite(payload[n]):   # the loss: the same number on every rank
                raise run.diverged("the batch loss")
            np.divide(payload[:n], count, out=run.grad)
            run.update(run.grad, run.lr(total))
            run.ex.add_compute(time.perf_counter() - start)
            if run.count_update(steps, payload[n] / count, stop_at):
                return True
        return False

    def exchange(self, run, buf, vote) -> np.ndarray:
        """Sum ``[gradient block, loss]`` (with the stop votes) over the replicas; the summed payload
        (only the nonzeros travel where that is cheaper: :mod:`mpiml.train.sparse_exchange`)."""
        from mpiml.train import sparse_exchange

        return sparse_exchange.exchange(run, buf, vote)


class Local(Strategy):
    """Local SGD: each replica steps on its own batches; models averaged every ``sync_every`` updates."""

    name = "local"
    averaged = True

    def every(self, cfg) -> int | None:
        """Updates between averages (None: only at the end)."""
        return cfg.sync_every

    def epoch(self, run, stop_at) -> bool:
        c = run.cfg
        update_rows = c.batch_size * c.accumulate
        steps = plan.local_steps(run.n_total, run.data.size, update_rows)
        total = steps * c.epochs
        order = plan.local_order(c.seed, run.epoch, run.data.rank, run.data.size, run.n_local)
        every = self.every(c)
        loss_since = 0.0
        while run.step < steps:
            start = time.perf_counter()
            rows = plan.local_rows(order, run.step, update_rows)
            run.grad[:] = 0.0
            run.ex.add_compute(time.perf_counter() - start)
            loss, vote = run.batch(np.array_split(rows, c.accumulate), run.grad)
            start = time.perf_counter()
            run.grad /= update_rows
            run.update(run.grad, run.lr(total))
            loss_since += loss / update_rows
            run.ex.add_compute(time.perf_counter() - start)
            if every is not None and (run.t + 1) % every == 0:
                self.average(run, loss_since, vote)
                loss_since = 0.0
            if run.count_update(steps, None, stop_at):
                return True
        return False

    def average(self, run, loss_since, vote) -> None:
        """Replace this replica's model by the replicas' average (the stop votes ride along)."""
        n = run.layout.n_params
        buf = run.ex.buffer(n + 1)
        buf[:n], buf[n] = run.theta, loss_since
        payload = run.ex.allreduce(buf, vote)
        if not math.isfinite(payload[n]):   # the losses since the last average: the same number on every rank
            raise run.diverged("the loss since the last model average")
        np.divide(payload[:n], run.data.size, out=run.theta)


class OneShot(Local):
    """One-shot averaging: local SGD averaged once, at the end (Zinkevich et al. 2010)."""

    name = "oneshot"

    def every(self, cfg) -> None:
        return None


class LBFGS(Strategy):
    """Full-batch L-BFGS on the layout's objective, optionally after one-shot SGD epochs (a warm start).

    Every rank runs the same iterations: each steering number comes out of a reduction.
    Runs to the end (no stop votes); checkpoints the result.
    """

    name = "lbfgs"

    def train(self, run, resumed, stop_at) -> bool:
        cfg = run.cfg
        if resumed is not None:  # lbfgs checkpoints only its final model: the run is complete
            return False
        elapsed = 0.0
        start = time.perf_counter()
        if cfg.warm_start_epochs and resumed is None:
            # Vowpal Wabbit's recipe: an averaged SGD pass gives L-BFGS a good start.
            warm = OneShot()
            run.cfg = replace(cfg, strategy=warm.name, epochs=cfg.warm_start_epochs, checkpoint_every=0)
            try:
                while run.epoch < run.cfg.epochs:
                    warm.epoch(run, None)
                    run.epoch += 1
                    run.step = 0
                run.theta = run.consensus(averaged=True).copy()
            finally:
                run.cfg = cfg
            elapsed = time.perf_counter() - start
            run.history.append({**run.evaluate(run.theta), "phase": "warm_start", "seconds": elapsed})
        start = time.perf_counter()
        extra = self.minimize(run)
        elapsed += time.perf_counter() - start
        record = run.evaluate(run.theta)
        record.update(epoch=len(run.history) + 1, seconds=elapsed, **extra)
        run.history.append(record)
        if run.progress is not None:
            run.progress.epoch(record)
        run.epoch = cfg.epochs
        run.checkpoint()
        return False

    def minimize(self, run) -> dict:
        """L-BFGS from ``run.theta`` (moved in place) to the optimum; the history record's ``lbfgs_*`` entries."""
        cfg = run.cfg
        trace, times = [], []
        start_all = time.perf_counter()

        def callback(iteration, f):
            trace.append(float(f))
            times.append(time.perf_counter() - start_all)
            run.t += 1
            if run.progress is not None:
                run.progress.update(run.epoch, min(iteration, cfg.max_iter), cfg.max_iter, f)

        objective, blocks = run.layout.objective(run)
        t = run.timings
        before = t.compute + t.comm + t.wait
        result = lbfgs_math.minimize(objective, blocks, tol=cfg.tol, max_iter=cfg.max_iter, callback=callback)
        # the optimizer's own vector work (two-loop, direction, history) is compute too
        t.compute += max(time.perf_counter() - start_all - (t.compute + t.comm + t.wait - before), 0.0)
        return {"lbfgs_iterations": result.iterations, "lbfgs_evaluations": result.evaluations,
                "lbfgs_converged": result.converged, "lbfgs_message": result.message,
                "lbfgs_objective": trace, "lbfgs_seconds": times}


from mpiml.train.asynchronous import Async  # noqa: E402  (a Strategy subclass in its own module)

STRATEGY_CLASSES = {cls.name: cls for cls in (Sync, Local, OneShot, LBFGS, Async)}


def make_strategy(name: str, compress: str = "none", backup: int = 0) -> Strategy:
    """The strategy called ``name`` (``auto`` is resolved before, by :func:`mpiml.train.config.resolve`);
    ``sync`` with a ``compress`` codec other than ``none``: :class:`mpiml.train.compressed.CompressedSync`;
    with ``backup`` workers: :class:`mpiml.train.backup.BackupSync`."""
    if name not in STRATEGY_CLASSES:
        raise ArgumentError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_CLASSES)}")
    if name == "sync" and backup:
        from mpiml.train.backup import BackupSync

        return BackupSync(backup)
    if name == "sync" and compress != "none":
        from mpiml.train.compressed import CompressedSync

        return CompressedSync(compress)
    return STRATEGY_CLASSES[name]()
