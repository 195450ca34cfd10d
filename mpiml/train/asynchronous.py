"""Asynchronous, bounded-staleness SGD (``--strategy async --staleness S``): no rank waits for the slowest.

The replicas share one model in an MPI window (:class:`SharedModel`) that rank 0 of the
replica group hosts: ``[theta (n) | clock_0 .. clock_{p-1}]``. Each rank, on its own, repeats:

1. read the shared model and the clocks (one ``Get_accumulate`` with ``NO_OP``: an atomic read
   per element, safe against the others' concurrent accumulates);
2. unless the total of the clocks reached the current target (see *sync points*), and as long
   as it is ``S`` updates ahead of the slowest rank (``clock_self - min(clocks) >= S``), wait
   (sleep 0.2 ms and read again): so replicas never get more than ``S`` updates apart
   (stale-synchronous parallel, Ho et al. 2013);
3. compute the gradient of its next batch of ``batch_size`` of its own rows (its own
   permutation per epoch, as ``local``) at the model it read, take an optimizer step on that
   copy (penalty, momentum/Adam state of its own, proximal step), and
4. add the change of the model, and 1 to its clock, to the shared model: one ``Accumulate``
   (``SUM``; per element atomic, so no update is lost, but one may see another half applied,
   as in Hogwild!).

The learning-rate schedule counts the updates of all ranks (the sum of the clocks); an
epoch is ``ceil(N / batch_size)`` updates of any ranks, ``N`` rows in all, as ``sync`` with
that global batch. A fast rank therefore does more of an epoch's updates than a slow one,
cycling through its own rows; bounding the staleness bounds that skew (each rank's rows
weigh the same in the end to within ``S`` updates), which is why convex models still reach
the optimum ``sync`` reaches.

Sync points. The ranks meet (a barrier, then every rank reads the same final model) at
every epoch end, where they evaluate and checkpoint as the other strategies do, at every
``checkpoint_every`` updates, and at ``stop_at``. A rank stops taking updates once the
clocks' total reaches the target, so up to p - 1 updates in flight may overshoot it.
Stop votes (a signal) travel with the epoch's evaluation: ``async`` stops at an epoch end.

Transport: one-sided MPI, chosen from ``benchmarks/async_transport.py``. The window comes
from ``Win.Allocate`` and one ``Lock_all`` epoch spans the whole run, opened while every rank
is inside MPI; each operation is completed by ``Flush``. Under MPICH (ch4) a per-operation
``Lock`` waits until the host rank next enters MPI (no passive progress), which a
computing or straggling host may not do for milliseconds; with ``Lock_all`` + ``Flush``
both MPICH and Open MPI complete the operations on a single node at once (tens of µs). A
rank serving its shard by point-to-point messages answers only between its own pieces of
work, so a slow host slows everyone, which this strategy exists to avoid. (Across nodes
MPICH needs its progress thread, ``MPIR_CVAR_ASYNC_PROGRESS=1``, for the same guarantee.)
The window is freed on every rank at the end, after ``Unlock_all`` and a barrier, also
when training raises.

Checkpoints hold the shared model at a sync point (one row, as ``sync``) and rank 0's
optimizer state; resuming restores that model and update count on every rank (any p), each
rank restarting its own rows at the epoch's position. Not bitwise: which rank makes which
update depends on timing. Guaranteed: the resumed run starts from the checkpointed model,
learning-rate position and epoch, and runs the remaining updates.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mpiml.errors import ArgumentError, MpimlError
from mpiml.train import plan
from mpiml.train.strategies import Strategy

POLL = 2e-4   # seconds a rank that is S updates ahead sleeps between reads of the clocks
# What this process saw in its last async run: the largest gap between the clocks in any read
# (never above the staleness bound) and its own update count (a diagnostic, read by the tests)
LAST_RUN: dict = {}


class LocalModel:
    """The shared model of a single replica (no MPI): the same interface as :class:`SharedModel`."""

    def __init__(self, theta: np.ndarray, size: int = 1):
        self.n, self.size, self.length = theta.size, size, theta.size + size + 1
        self.mem = np.zeros(self.length)
        self.mem[: self.n] = theta

    def read(self, out: np.ndarray) -> np.ndarray:
        """``[theta | clocks | failed]`` into ``out``."""
        out[:] = self.mem
        return out

    def add(self, delta: np.ndarray) -> None:
        """Add ``[theta change | clock increments | failures]``."""
        self.mem += delta

    def barrier(self) -> None:
        """All ranks' additions so far are in the model."""

    def others_failed(self) -> bool:
        """A sync point that also tells whether a rank left the run by an exception (every rank: the same)."""
        return False

    def close(self, failed: bool = False) -> None:
        """Release the window (every rank; ``failed``: this rank leaves by an exception)."""


class SharedModel(LocalModel):
    """``[theta | clocks]`` in an MPI window on rank 0 of ``comm`` (collective to make and to :meth:`close`)."""

    def __init__(self, theta: np.ndarray, comm):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.n, self.size = theta.size, comm.Get_size()
        self.length = self.n + self.size + 1
        count = self.length if comm.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(8 * count, 8, comm=comm)
        if comm.Get_rank() == 0:
            mem = np.frombuffer(self.win.tomemory(), dtype=np.float64)
            mem[: self.n] = theta
            mem[self.n:] = 0.0
        self._zeros = np.zeros(self.length)
        self.agreed = False   # whether every rank already learned (at a sync point) that one failed
        comm.Barrier()   # the model is written before anyone reads it
        self.win.Lock_all()   # one passive epoch for the run: see the module docstring (MPICH's progress)
        self.locked = True
        comm.Barrier()

    def read(self, out: np.ndarray) -> np.ndarray:
        self.win.Get_accumulate(self._zeros, out, 0, op=self.MPI.NO_OP)
        self.win.Flush(0)
        return out

    def add(self, delta: np.ndarray) -> None:
        self.win.Accumulate(delta, 0, op=self.MPI.SUM)
        self.win.Flush(0)

    def barrier(self) -> None:
        self.comm.Barrier()   # every rank flushed its accumulates before entering

    def others_failed(self) -> bool:
        # The same collective as close()'s first one: a rank that failed and went to close() meets the
        # others here, whether they are at a sync point or closing too; after a "yes" they skip it there.
        failed = self.comm.allreduce(0, op=self.MPI.MAX) > 0
        self.agreed = self.agreed or failed
        return failed

    def close(self, failed: bool = False) -> None:
        if self.win is None:
            return
        others = False
        if not self.agreed:
            others = self.comm.allreduce(1 if failed else 0, op=self.MPI.MAX) > 0
        if self.locked:
            self.win.Unlock_all()
            self.locked = False
        self.comm.Barrier()
        self.win.Free()
        self.win = None
        if others and not failed:
            raise MpimlError("strategy async: another rank failed; stopping", collective=True)


def replica_comm(run):
    """The communicator of ``run``'s replicas (None without MPI); data parallelism only."""
    layout = run.layout
    comms = getattr(layout, "comms", None)
    if comms is not None and comms.cols > 1:
        raise ArgumentError(f"strategy {run.cfg.strategy} with {'backup' if run.cfg.backup else 'async'} trains "
                            "data-parallel models only (every rank the whole model)", collective=True)
    comm = getattr(run.data, "comm", None)
    if comm is None and comms is not None:
        comm = comms.world
    if comm is None:
        return None
    from mpiml.runtime.comm import private_comm

    return private_comm(comm)


def open_shared(run) -> LocalModel:
    """The shared model of ``run``'s replicas, starting from ``run.theta`` (collective)."""
    comm = replica_comm(run)
    if comm is None or run.data.size == 1:
        return LocalModel(run.theta)
    return SharedModel(run.theta, comm)


class Async(Strategy):
    """Updates to a shared model without waiting for the slowest rank, staleness bounded (module docstring)."""

    name = "async"
    averaged = False   # at every sync point all ranks take the shared model

    def train(self, run, resumed, stop_at) -> bool:
        if run.reproducible:
            raise ArgumentError("reproducible is for sync and lbfgs: strategy async depends on timing",
                                collective=True)
        self.shared = open_shared(run)
        self.base = run.t          # the update count when the clocks were zero
        p = run.data.size
        self.mem = np.empty(self.shared.length)
        self.delta = np.zeros_like(self.mem)
        self.own = 0               # this rank's updates in the current epoch (its place in its rows)
        self.own_epoch = run.epoch
        self.own_start = run.step // max(p, 1)   # a resumed epoch: each rank's share of the updates done
        self.max_spread = self.own_total = 0
        failed = True
        try:
            stopped = super().train(run, resumed, stop_at)
            failed = False
            return stopped
        finally:
            self.shared.close(failed)
            LAST_RUN.clear()
            LAST_RUN.update(max_spread=self.max_spread, own_updates=self.own_total, staleness=run.cfg.staleness)

    def epoch(self, run, stop_at) -> bool:
        c = run.cfg
        steps = plan.sync_steps(run.n_total, c.batch_size * c.accumulate)
        epoch_end = (run.epoch + 1) * steps
        while True:
            target = epoch_end
            if stop_at is not None:
                target = min(target, stop_at)
            if c.checkpoint_every:
                target = min(target, (run.t // c.checkpoint_every + 1) * c.checkpoint_every)
            self.segment(run, steps, target)
            self.meet(run, run.epoch * steps)
            if run.t >= epoch_end:
                return False
            if stop_at is not None and run.t >= stop_at:
                run.checkpoint()
                return True
            run.checkpoint()   # a checkpoint_every point

    def segment(self, run, steps, target) -> None:
        """Updates until the clocks' total reaches ``target`` (absolute update count)."""
        c, data, shared, delta = run.cfg, run.data, self.shared, self.delta
        update_rows = c.batch_size * c.accumulate
        total = steps * c.epochs
        if self.own_epoch != run.epoch:
            self.own_epoch, self.own, self.own_start = run.epoch, 0, 0
        order = plan.local_order(c.seed, run.epoch, data.rank, data.size, run.n_local)
        try:
            self._updates(run, steps, target, order, total, update_rows)
        except BaseException:
            # tell the others, who would otherwise wait for this rank's clock (S ahead) forever
            delta[:] = 0.0
            delta[shared.n + shared.size] = 1.0
            shared.add(delta)
            raise

    def _updates(self, run, steps, target, order, total, update_rows) -> None:
        """The loop of :meth:`segment`."""
        c, shared, mem, delta, t = run.cfg, self.shared, self.mem, self.delta, run.timings
        n, p = shared.n, shared.size
        me = run.data.rank if p > 1 else 0
        while True:
            start = time.perf_counter()
            shared.read(mem)
            clocks = mem[n:n + p]
            if mem[n + p] > 0:
                raise MpimlError("strategy async: another rank failed; stopping", collective=True)
            run.t = self.base + int(clocks.sum())
            self.max_spread = max(self.max_spread, int(clocks.max() - clocks.min()))
            if run.t >= target:
                t.comm += time.perf_counter() - start
                return
            if clocks[me] - clocks.min() >= c.staleness:   # S ahead of the slowest: let it catch up
                time.sleep(POLL)
                t.wait += time.perf_counter() - start
                continue
            t.comm += time.perf_counter() - start
            start = time.perf_counter()
            np.copyto(run.theta, mem[:n])
            rows = plan.local_rows(order, self.own_start + self.own, update_rows)
            run.grad[:] = 0.0
            run.ex.add_compute(time.perf_counter() - start)
            run.batch(np.array_split(rows, c.accumulate), run.grad)
            start = time.perf_counter()
            run.grad /= update_rows
            run.update(run.grad, run.lr(total))
            np.subtract(run.theta, mem[:n], out=delta[:n])
            delta[n:] = 0.0
            delta[n + me] = 1.0
            run.ex.add_compute(time.perf_counter() - start)
            start = time.perf_counter()
            shared.add(delta)
            t.comm += time.perf_counter() - start
            self.own += 1
            self.own_total += 1
            if run.progress is not None:
                run.progress.update(run.epoch, min(run.t + 1 - run.epoch * steps, steps), steps, None)

    def meet(self, run, epoch_start) -> None:
        """A sync point: once every rank stopped updating, all take the shared model and the update count."""
        start = time.perf_counter()
        if self.shared.others_failed():   # also the barrier: every rank flushed its accumulates
            raise MpimlError("strategy async: another rank failed; stopping", collective=True)
        mem = self.shared.read(self.mem)
        n = self.shared.n
        np.copyto(run.theta, mem[:n])
        run.t = self.base + int(mem[n:n + self.shared.size].sum())
        run.step = run.t - epoch_start
        self.shared.barrier()   # nobody adds again before every rank has read
        run.timings.wait += time.perf_counter() - start
        if not math.isfinite(float(np.sum(run.theta))):   # the same model, so the same verdict, on every rank
            raise run.diverged("the shared model")
