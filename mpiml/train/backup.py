"""Backup workers for ``sync`` (``--backup K``): each update proceeds with the first ``p - K`` gradients.

Chen et al. 2016 ("Revisiting distributed synchronous SGD"): with ``K`` backup workers an
update waits only for the fastest ``p - K`` of the ``p`` ranks, so one slow rank no longer
sets the pace. The batches are ``sync``'s (:func:`mpiml.train.plan.sync_plan`: update ``s``
uses the rows of global batch ``s`` each rank holds); a late rank's rows of that batch are
left out of it and the update is the *mean* over the rows that did arrive (the reweighting:
the summed gradients divided by their row count, not by the batch size).

Protocol, on a private duplicate of the replicas' communicator, rank 0 the reducer:

- every rank computes its contribution ``[gradient sum, loss sum, rows, stop vote, update]``
  to the current update at the current model, and ranks other than 0 post it with ``Isend``;
- rank 0 adds its own and receives until ``p - K`` contributions *to this update* are in
  (and takes any more that have already arrived), then sends the sum to every other rank
  (``Isend``) and applies it; a contribution that
  arrives after its update was decided is **counted in the update being decided when it
  arrives** (a gradient one or more updates stale, as in asynchronous SGD), but not towards
  its ``p - K``; so no rank's rows are lost, except those still in flight at an epoch's end
  (received and discarded there): a persistently slow rank contributes to about one update
  in ``f`` (its slowdown), and its rows weigh about ``1/f`` as much as the others';
- a rank other than 0 applies every decided sum in order, so every model stays identical
  (the same sums, applied in the same order); after a slow computation it first applies the
  sums decided meanwhile and contributes to the update in progress, skipping the ones it
  missed, so a straggler never falls further behind than one update.

Rank 0 always contributes (it decides): backup workers hide a slow rank other than 0.
At the end of every epoch (and where a run stops or fails), the ranks exchange how many
contributions each sent, rank 0 receives the late ones still in flight and every request is
completed, so nothing is left pending and every rank ends. Stops (signals,
``--stop-after-updates``) and divergence act after the same update on every rank, as in ``sync``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from mpiml.errors import ArgumentError
from mpiml.train import plan
from mpiml.train.strategies import Sync

TAG_GRAD, TAG_SUM = 0x5B01, 0x5B02
LOSS, ROWS, VOTE, UPDATE = 0, 1, 2, 3   # slots after the gradient
EXTRA = 4


def combine(contributions, n: int) -> np.ndarray:
    """The reweighted update of ``contributions`` (arrays ``[grad sum (n), loss, rows, vote, update]``):
    ``[mean gradient over the arrived rows, mean loss, rows, votes, update]`` (pure; the reference of the protocol)."""
    total = np.sum(contributions, axis=0)
    rows = total[n + ROWS]
    out = total.copy()
    if rows > 0:
        out[: n + 1] /= rows
    out[n + UPDATE] = contributions[0][n + UPDATE]   # the first is the reducer's own, at this update
    return out


class BackupSync(Sync):
    """``sync`` whose every update takes the first ``p - backup`` contributions (module docstring)."""

    name = "sync"

    def __init__(self, backup: int):
        self.backup = int(backup)

    def train(self, run, resumed, stop_at) -> bool:
        p = run.data.size
        if self.backup >= p:
            raise ArgumentError(f"backup {self.backup} needs more than {self.backup} ranks (this run has {p}): "
                                f"an update takes the first p-K contributions", collective=True)
        if run.reproducible:
            raise ArgumentError("backup leaves late gradients out of their update: not with reproducible",
                                collective=True)
        from mpiml.train.asynchronous import replica_comm

        self.link = replica_comm(run).Dup()
        try:
            return super().train(run, resumed, stop_at)
        finally:
            self.link.Free()

    def epoch(self, run, stop_at) -> bool:
        c, link = run.cfg, self.link
        update_rows = c.batch_size * c.accumulate
        steps = plan.sync_steps(run.n_total, update_rows)
        self.total = steps * c.epochs
        self.plan = plan.sync_plan(c.seed, run.epoch, run.n_total, run.offset, run.n_local, update_rows)
        self.n = n = run.layout.n_params
        self.sent, self.pending = 0, []
        self.received = np.zeros(link.Get_size(), dtype=np.int64)
        stopped = False
        try:
            if link.Get_rank() == 0:
                while run.step < steps and not stopped:
                    own = self.contribution(run, run.step, np.empty(n + EXTRA))
                    stopped = self.apply(run, self.decide(run, own), steps, stop_at)
            else:
                result = np.empty(n + EXTRA)
                while run.step < steps and not stopped:
                    while not stopped and run.step < steps and link.Iprobe(source=0, tag=TAG_SUM):
                        stopped = self.apply(run, self.receive_sum(run, result), steps, stop_at)
                    if stopped or run.step >= steps:
                        break
                    buf = self.contribution(run, run.step, np.empty(n + EXTRA))
                    self.pending.append((link.Isend(buf, dest=0, tag=TAG_GRAD), buf))
                    self.sent += 1
                    self.pending = [(r, b) for r, b in self.pending if not r.Test()]
                    stopped = self.apply(run, self.receive_sum(run, result), steps, stop_at)
        finally:
            self.settle(run)
        return stopped

    def contribution(self, run, s, buf) -> np.ndarray:
        """This rank's ``[gradient sum, loss sum, rows, vote, update]`` for update ``s`` of the epoch."""
        c, n = run.cfg, self.n
        update_rows = c.batch_size * c.accumulate
        rows, bounds, positions = self.plan
        start = time.perf_counter()
        part, pos = rows[bounds[s]:bounds[s + 1]], positions[bounds[s]:bounds[s + 1]] - s * update_rows
        cuts = np.searchsorted(pos // c.batch_size, np.arange(1, c.accumulate))
        buf[:] = 0.0
        run.ex.add_compute(time.perf_counter() - start)
        buf[n + LOSS], buf[n + VOTE] = run.batch(np.split(part, cuts), buf[:n])
        buf[n + ROWS], buf[n + UPDATE] = len(part), run.t
        return buf

    def decide(self, run, own) -> np.ndarray:
        """Rank 0: its own and the first ``p - K - 1`` other contributions to update ``run.t``, summed and
        reweighted; sent to every other rank."""
        link, n = self.link, self.n
        need = link.Get_size() - self.backup
        taken, fresh = [own], 1
        scratch = np.empty(n + EXTRA)
        status = self._status()
        start = time.perf_counter()
        # wait for p - K in all, and take any more that have already arrived (free)
        while fresh < need or link.Iprobe(source=self._any(), tag=TAG_GRAD):
            link.Recv(scratch, source=self._any(), tag=TAG_GRAD, status=status)
            self.received[status.Get_source()] += 1
            # a late one (its update was decided) counts in this one, but not towards the p - K
            fresh += int(scratch[n + UPDATE]) == run.t
            taken.append(scratch.copy())
        run.timings.wait += time.perf_counter() - start
        result = combine(taken, n)
        self.pending = [(r, b) for r, b in self.pending if not r.Test()]
        for dest in range(1, link.Get_size()):
            self.pending.append((link.Isend(result, dest=dest, tag=TAG_SUM), result))
        return result

    def receive_sum(self, run, out) -> np.ndarray:
        start = time.perf_counter()
        self.link.Recv(out, source=0, tag=TAG_SUM)
        run.timings.wait += time.perf_counter() - start
        return out

    def apply(self, run, result, steps, stop_at) -> bool:
        """Take the decided update ``result`` (the same on every rank); True to stop now."""
        n = self.n
        if int(result[n + UPDATE]) != run.t:
            raise RuntimeError(f"backup: update {int(result[n + UPDATE])} arrived where {run.t} was due")
        start = time.perf_counter()
        if not math.isfinite(result[n + LOSS]):
            raise run.diverged("the batch loss")
        np.copyto(run.grad, result[:n])
        run.update(run.grad, run.lr(self.total))
        run.ex.stop_agreed = run.ex.stop_agreed or result[n + VOTE] > 0
        run.ex.add_compute(time.perf_counter() - start)
        return run.count_update(steps, float(result[n + LOSS]), stop_at)

    def settle(self, run) -> None:
        """Receive every contribution still in flight and complete every request (collective)."""
        link = self.link
        sent = link.gather(self.sent, root=0)
        if link.Get_rank() == 0:
            scratch = np.empty(self.n + EXTRA)
            for source in range(1, link.Get_size()):
                for _ in range(sent[source] - int(self.received[source])):
                    link.Recv(scratch, source=source, tag=TAG_GRAD)
        from mpi4py import MPI

        MPI.Request.Waitall([r for r, _ in self.pending])
        self.pending = []

    @staticmethod
    def _status():
        from mpi4py import MPI

        return MPI.Status()

    @staticmethod
    def _any():
        from mpi4py import MPI

        return MPI.ANY_SOURCE
