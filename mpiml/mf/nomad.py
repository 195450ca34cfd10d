"""NOMAD-style asynchronous matrix factorization (Yun et al., VLDB 2014): DSGD without the sub-epoch barrier.

Users are split as in :mod:`mpiml.mf.dsgd` (rank ``r`` owns user block ``r`` and only
ever updates those rows), but the items are cut into ``B = blocks_per_rank * p`` small
blocks (balanced by rating count), ``blocks_per_rank`` of them "at home" on each rank.
Each rank keeps a queue of the item blocks it holds. It takes one, runs plain SGD over
its users' ratings of those items (:func:`mpiml.mf.dsgd.sgd_block`'s kernels, in a fresh
random order), and passes the block on with a nonblocking send: the block's rows plus a
header (block id, epoch, sender, the sender's queue length and how many blocks it has yet
to visit, and the block's visits to each rank this epoch). Between pieces of work it polls
for arriving blocks; a rank waits only when its queue is empty. No two ranks ever hold the
same item block, and no two ranks share a user, so no factor row is touched by two ranks at
once (as in DSGD), but nobody waits for a sub-epoch to end.

Where a block goes next (``route``): ``"least_loaded"`` (default) sends it to the rank it
has not visited this epoch with the shortest queue, as this rank knows it (every message
carries its sender's queue length; a rank adds one for each block it sends to another);
``"cyclic"`` to the next rank. A rank takes first the oldest block in its queue that it has
not yet updated this epoch. A block that has visited every rank goes on circulating until
the epoch ends, to ranks that have visited it fewer than ``1 + extra_visits`` times (then
it goes home to rest): ranks that would otherwise sit idle, waiting for a slower one, make
extra passes over their ratings instead, all but the rank furthest behind (as far as it
knows: the one the epoch waits for), which passes visited blocks on rather than update
them again. ``extra_visits`` (default 1) bounds how unevenly the ratings are weighted
within an epoch (at most ``1 + extra_visits`` : 1; the more uneven, the further the result
from the sync optimum); 0 makes every block visit every rank exactly once per epoch, as
DSGD's sweep does, only without the barriers. Each epoch's record counts all ``visits``.

When an epoch ends (``epoch_end``): ``"coverage"`` (default) once every block has visited
every rank at least once; a rank ``f`` times slower than the others then still sets the
length of the epoch (as in DSGD), but the others make extra passes meanwhile, so fewer
epochs reach a given RMSE. ``"work"``: once the ranks have made ``B * p`` visits in all (as
many as a full round), whichever blocks they were; a slow rank then holds up no one, and
its users get fewer updates per epoch (about ``1/f`` of the others').

Termination: the rank where what counts happens (a block completes its round; a visit,
with ``"work"``) tells rank 0 with a tiny synchronous message (``Issend``, tag ``DONE``);
once the count is reached rank 0 sends ``STOP`` to every rank. On ``STOP`` a rank sends
every block it holds home (and forwards home any block that still arrives); a rank that
has all its home blocks and whose notes to rank 0 are complete (so received) joins a
nonblocking barrier (``Ibarrier``) and keeps forwarding until the barrier completes, which
happens only when every block is home and every note taken, so that no message is in
flight. The receives still posted are then cancelled, and every send is complete. Then,
as in DSGD, the item factors are gathered, the loss is summed and the step size updated;
checkpoints (the estimator's, every ``checkpoint_every`` epochs) are written here, with
every block home. All messages use a private ``Dup`` of the communicator, with one tag
per purpose, and ``MPI.ANY_SOURCE`` receives into preallocated buffers. Idle ranks poll
with ``Testany`` and yield the core between polls.

Determinism: the factors depend on the order in which blocks arrive, which depends on
message timing, so two runs at ``p > 1`` differ (in the last digits after one epoch, and
more later), as do their RMSEs (by about the run-to-run noise of SGD). At ``p = 1`` there
is no message: the rank visits blocks ``0 .. B-1`` in order once per epoch, each in an
order drawn from the epoch's generator, which is exactly DSGD's serial sweep over
``B`` item blocks (tested against a Python reference). A resumed run starts from the
checkpoint's factors and step size; at ``p = 1`` it is bitwise the uninterrupted run.

Straggler injection (:mod:`mpiml.runtime.stragglers`, ``MPIML_SLOW_RANKS``): a slowed rank
sleeps ``(f - 1) t`` after each piece of ``t`` seconds of SGD (counted as its compute).
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np

from mpiml.errors import MpimlError
from mpiml.mf import dsgd
from mpiml.mf.partition import balanced_blocks, pair_dots
from mpiml.runtime import partition, stragglers
from mpiml.runtime.jit import compiled
from mpiml.runtime.seeding import rank_generator

ROUTES = ("least_loaded", "cyclic")
ENDS = ("coverage", "work")
TAG_BLOCK, TAG_DONE, TAG_STOP = 11, 12, 13
# Header of a block message: id, epoch, sender, sender's queue length, whether it is sent home to
# rest, how many blocks the sender has yet to visit this epoch; then the block's visits to each
# rank this epoch. Floats, so that header and rows travel in one buffer.
ID, EPOCH, SENDER, QUEUE, PARK, REMAIN = range(6)
FIELDS = 6
PIECE = 4096  # ratings per kernel call: between calls a rank polls its messages


# ----------------------------------------------------------------------------- pure parts
def item_blocks(item_counts, size: int, per_rank: int):
    """``(bounds, homes)``: ``B = per_rank * size`` item blocks balanced by rating count, and
    the home rank of each (contiguous runs of ``per_rank``, so home blocks are rank-ordered)."""
    nblocks = per_rank * size
    bounds = balanced_blocks(item_counts, nblocks)
    homes = partition.owner(partition.contiguous(nblocks, size), np.arange(nblocks))
    return bounds, np.asarray(homes, dtype=np.int64)


def header_size(size: int) -> int:
    """Floats before the rows in a block message."""
    return FIELDS + size


def route(visits, loads, rank: int, size: int, policy: str, extra: int) -> int:
    """Where a block goes after ``rank`` updated it (pure); -1: home, to rest until the epoch ends.

    ``visits``: the block's visits to each rank this epoch; ``loads``: this rank's estimate of
    each rank's queue; ``extra``: the visits a rank may make beyond its first. ``"cyclic"``: the
    next rank, if it may take the block. ``"least_loaded"``: among the other ranks not yet
    visited (else those that may take an extra visit), the one with the shortest queue, ties
    to the nearest after ``rank``.
    """
    if policy == "cyclic":
        nxt = (rank + 1) % size
        return nxt if nxt != rank and visits[nxt] < 1 + extra else -1
    others = [(rank + s) % size for s in range(1, size)]
    candidates = [d for d in others if visits[d] == 0] or [d for d in others if visits[d] < 1 + extra]
    if not candidates:
        return -1
    return min(candidates, key=lambda d: (loads[d], (d - rank) % size))


def take(queue, rank: int, extra: bool = True) -> int:
    """Position in ``queue`` (of block buffers) of the next block to update: the oldest one this
    rank has not visited this epoch, else (if ``extra`` visits are allowed now) the oldest; else -1."""
    for j, block in enumerate(queue):
        if not block.visits[rank]:
            return j
    return 0 if extra else -1


class Block:
    """One item block in its message buffer: header fields, visit counts and rows are views."""

    __slots__ = ("buf", "rows", "visits", "id")

    def __init__(self, buf: np.ndarray, size: int, rows: int, width: int):
        h = header_size(size)
        self.buf = buf[:h + rows * width]
        self.id = int(buf[ID])
        self.visits = self.buf[FIELDS:h]
        self.rows = self.buf[h:].reshape(rows, width)

    @classmethod
    def new(cls, block_id: int, epoch: int, rows: np.ndarray, size: int) -> "Block":
        h = header_size(size)
        buf = np.zeros(h + rows.size)
        buf[ID], buf[EPOCH] = block_id, epoch
        buf[h:] = rows.reshape(-1)
        return cls(buf, size, rows.shape[0], rows.shape[1])


def sweep(ratings: dsgd.BlockRatings, x, y, mu, lr, reg, rng, fixed, between=None) -> None:
    """:func:`mpiml.mf.dsgd.sgd_block` in pieces of :data:`PIECE` ratings (the same order, the same
    result), calling ``between(seconds)`` after each piece."""
    order = rng.permutation(ratings.vals.size)
    fast = compiled()
    if fast:
        from mpiml.mf import kernels
    for lo in range(0, order.size, PIECE):
        start = time.perf_counter()
        piece = order[lo:lo + PIECE]
        if fast:
            kernels.sgd_ratings(piece, ratings.users, ratings.items, ratings.vals, x, y, float(mu), float(lr),
                                float(reg), int(fixed[0]), int(fixed[1]))
        else:
            dsgd.sgd_block_reference(ratings, x, y, mu, lr, reg, piece, fixed[0], fixed[1])
        if between is not None:
            between(time.perf_counter() - start)


# ------------------------------------------------------------------------- the epoch loop
class Epoch:
    """One epoch of the message loop on one rank (see the module docstring)."""

    def __init__(self, comm, ex, blocks, homes, bounds, x, mu, lr, reg, rng, fixed, policy, extra, epoch,
                 slowdown, end="coverage"):
        self.comm, self.ex = comm, ex
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.blocks, self.homes, self.bounds = blocks, homes, bounds
        self.x, self.mu, self.lr, self.reg, self.rng, self.fixed = x, mu, lr, reg, rng, fixed
        self.policy, self.extra, self.epoch, self.slowdown = policy, extra, epoch, slowdown
        self.nblocks = homes.size
        self.mine = int(np.count_nonzero(homes == self.rank))
        self.queue: deque = deque()
        self.home: dict = {}              # home blocks resting here (all of them, once the epoch ends)
        self.loads = np.full(self.size, self.mine, dtype=np.int64)
        self.sends: list = []             # (request, buffer) until complete
        self.stopped = False
        self.done = 0                     # rank 0: what counts towards the end of the epoch
        self.goal = self.nblocks if end == "coverage" else self.nblocks * self.size
        self.end = end
        self.notes: list = []             # DONE notes to rank 0 until matched
        self.visits = 0
        self.remaining = self.nblocks     # blocks this rank has yet to visit this epoch
        self.behind = np.full(self.size, self.nblocks)   # the same of every rank, as last heard
        self.barrier = None
        self.width = x.shape[1]
        rows = np.diff(bounds)
        self.largest = int(rows.max()) if rows.size else 0
        self._post()

    # -- messages
    def _post(self):
        from mpi4py import MPI

        self.MPI = MPI
        self.recv_buf = np.empty(header_size(self.size) + self.largest * self.width)
        self.recv = self.comm.Irecv(self.recv_buf, source=MPI.ANY_SOURCE, tag=TAG_BLOCK) if self.size > 1 else None
        self.note = np.zeros(1, dtype=np.int64)
        self.control = None
        if self.size > 1:
            if self.rank == 0:
                self.control = self.comm.Irecv(self.note, source=MPI.ANY_SOURCE, tag=TAG_DONE)
            else:
                self.control = self.comm.Irecv(self.note, source=0, tag=TAG_STOP)

    def _send(self, block: Block, dest: int, park: bool = False):
        block.buf[SENDER] = self.rank
        block.buf[QUEUE] = len(self.queue)
        block.buf[PARK] = park
        block.buf[REMAIN] = self.remaining
        if not park:
            self.loads[dest] += 1
        self.sends.append((self.comm.Isend(block.buf, dest=dest, tag=TAG_BLOCK), block.buf))

    def _arrived(self):
        buf = self.recv_buf
        block_id = int(buf[ID])
        if int(buf[EPOCH]) != self.epoch:   # cannot happen: epochs are separated by collectives
            raise MpimlError(f"nomad: a block of epoch {int(buf[EPOCH])} arrived in epoch {self.epoch}")
        rows = int(self.bounds[block_id + 1] - self.bounds[block_id])
        block = Block(buf, self.size, rows, self.width)
        self.loads[int(buf[SENDER])] = int(buf[QUEUE])
        self.behind[int(buf[SENDER])] = int(buf[REMAIN])
        self.ex.bytes += block.buf.nbytes
        self.recv_buf = np.empty_like(buf)
        self.recv = self.comm.Irecv(self.recv_buf, source=self.MPI.ANY_SOURCE, tag=TAG_BLOCK)
        if self.stopped or buf[PARK]:
            self._homeward(block)
        else:
            self.queue.append(block)

    def _control(self):
        if self.rank == 0:   # a DONE note; its receive stays posted until the epoch's last barrier
            self.control = self.comm.Irecv(self.note, source=self.MPI.ANY_SOURCE, tag=TAG_DONE)
            self._count()
        else:
            self.control = None
            self._stop()

    def _count(self):
        """What ends the epoch happened here (a block finished its round; with ``end="work"``, a
        visit): count it (rank 0) or tell rank 0, with a synchronous send, so that once this rank's
        notes are complete rank 0 has received them all."""
        if self.rank == 0:
            self.done += 1
            if self.done >= self.goal and not self.stopped:
                self._stop()
        else:
            note = np.ones(1, dtype=np.int64)
            self.notes.append((self.comm.Issend(note, dest=0, tag=TAG_DONE), note))

    def _stop(self):
        if self.rank == 0:
            for d in range(1, self.size):
                note = np.zeros(1, dtype=np.int64)
                self.sends.append((self.comm.Isend(note, dest=d, tag=TAG_STOP), note))
        self.stopped = True
        while self.queue:
            self._homeward(self.queue.popleft())

    def _homeward(self, block: Block):
        home = int(self.homes[block.id])
        if home == self.rank:
            self.home[block.id] = block
        else:
            self._send(block, home, park=True)

    def _requests(self):
        null = self.MPI.Request  # a fresh null request each: Testany/Waitany write back into the list
        return [self.recv or null(), self.control or null(), self.barrier or null()]

    def _dispatch(self, index: int):
        if index == 0:
            self.recv = None
            self._arrived()
        elif index == 1:
            self.control = None
            self._control()
        elif index == 2:
            self.barrier = None
            self.finished = True

    def poll(self):
        """Handle every message that has arrived; retire completed sends (no waiting)."""
        if self.size == 1:
            return
        start = time.perf_counter()
        while True:
            requests = self._requests()
            index, flag = self.MPI.Request.Testany(requests)
            if not flag or index == self.MPI.UNDEFINED:
                break
            self._dispatch(index)
        self._retire()
        self.ex.timings.comm += time.perf_counter() - start

    def _retire(self):
        if self.sends:
            self.sends = [(req, buf) for req, buf in self.sends if not req.Test()]
        if self.notes:
            self.notes = [(req, buf) for req, buf in self.notes if not req.Test()]

    def wait(self):
        """Block until one message arrives (or the barrier completes): time counted as wait.

        Polls with ``Testany`` and yields the core between polls (``sched_yield``), rather than
        spinning in ``Waitany``: with more ranks than cores the rank that holds the work runs
        sooner; with a core each, the yield returns at once."""
        start = time.perf_counter()
        requests, notes = self._requests(), bool(self.notes)
        while True:
            index, flag = self.MPI.Request.Testany(requests)
            if flag:
                break
            if notes:   # waiting, before the barrier, for rank 0 to take this rank's last notes
                self._retire()
                if not self.notes:
                    index = self.MPI.UNDEFINED
                    break
            os.sched_yield()
        self.ex.timings.wait += time.perf_counter() - start
        if index != self.MPI.UNDEFINED:
            self._dispatch(index)
        self._retire()

    # -- work
    def _may_extra(self) -> bool:
        """Whether this rank may spend time on an extra visit now: not while it is (as far as it
        knows) the furthest behind, the rank the end of the epoch waits for."""
        if self.remaining == 0:
            return True
        others = np.delete(self.behind, self.rank)
        return others.size > 0 and self.remaining < others.max()

    def _work(self):
        j = take(self.queue, self.rank, self._may_extra())
        if j < 0:   # only blocks it has visited, and no time for extras: pass the oldest on
            self._onward(self.queue.popleft())
            return
        block = self.queue[j]
        del self.queue[j]
        ratings = self.blocks[block.id]
        with self.ex.computing():
            sweep(ratings, self.x, block.rows, self.mu, self.lr, self.reg, self.rng, self.fixed, self._between)
        self.visits += 1
        block.visits[self.rank] += 1
        if block.visits[self.rank] == 1:
            self.remaining -= 1
            if block.visits.all() and self.end == "coverage":
                self._count()
        if self.end == "work":
            self._count()
        self._onward(block)

    def _onward(self, block: Block):
        dest = -1 if self.stopped else route(block.visits, self.loads, self.rank, self.size, self.policy,
                                             self.extra)
        if dest < 0:   # the epoch ended while this block was updated, or it may go nowhere else: home
            self._homeward(block)
        else:
            self._send(block, dest)

    def _between(self, seconds):
        if self.slowdown is not None:
            self.slowdown.after(seconds)
        self.poll()

    def run(self) -> dict:
        """Run the epoch to its end; returns ``{block id: Block}`` of this rank's home blocks."""
        self.finished = False
        while not self.stopped:
            if self.queue:
                self._work()
                self.poll()
            else:
                self.wait()
        while self.size > 1:
            self.poll()
            if self.finished:
                break
            if self.barrier is None and len(self.home) == self.mine and not self.notes:
                self.barrier = self.comm.Ibarrier()
                continue
            self.wait()
        # Every block is home and every note was received: the receives still posted match nothing.
        for name in ("recv", "control"):
            request = getattr(self, name)
            if request is not None:
                request.Cancel()
                request.Wait()
                setattr(self, name, None)
        for req, _ in self.sends:
            req.Wait()
        self.sends = []
        return self.home

    finished = False


# ------------------------------------------------------------------------------ training
def start_blocks(q, bounds, homes, rank, size, epoch):
    """This rank's home blocks at the start of an epoch, from the full item factors ``q``."""
    return [Block.new(b, epoch, q[bounds[b]:bounds[b + 1]], size) for b in np.flatnonzero(homes == rank)]


def train(model, data, ex, p, q, first, iters=None, track=True):
    """:meth:`FactorModel._train` of :class:`~mpiml.mf.models.NOMAD` (see the module docstring)."""
    v, lay = model._params, model._layout
    r, size = ex.rank, ex.size
    ub, ur, mu = data["user_bounds"], data["user_rows"], model.global_mean_
    if first == 0:
        model._rate, model._previous = v.lr, None
    bounds, homes = item_blocks(data["item_counts"], size, v.blocks_per_rank)
    x = p[ub[r]:ub[r + 1]].copy()
    local_users = ur.row_ids() - ub[r]
    blocks = dsgd.split_by_item_block(local_users, ur.cols, ur.vals, bounds)
    fixed = (lay.fixed("users"), lay.fixed("items")) if lay.biases else (-1, -1)
    free_x, free_y = lay.free("users"), lay.free("items")
    item_counts = data["item_counts"]
    slowdown = stragglers.Slowdown.for_rank()
    slowdown = slowdown if slowdown.active else None
    comm = ex.comm.Dup()  # private: its tags and ANY_SOURCE receives meet nothing else
    try:
        held = start_blocks(q, bounds, homes, r, size, first)
        for epoch in range(first, v.iters if iters is None else iters):
            clock = model._clock(ex)
            for block in held:
                block.buf[:header_size(size)] = 0.0
                block.buf[ID], block.buf[EPOCH] = block.id, epoch
            rng = rank_generator(v.seed, r, size, purpose=1000 + epoch)
            loop = Epoch(comm, ex, blocks, homes, bounds, x, mu, model._rate, model.reg_, rng, fixed, v.route,
                         v.extra_visits, epoch, slowdown, v.epoch_end)
            loop.queue.extend(held)
            home = loop.run()
            held = [home[b] for b in sorted(home)]
            y = np.concatenate([b.rows for b in held]) if held else np.zeros((0, lay.width))
            q = ex.gather(y)
            with ex.computing():
                err = ur.vals - mu - pair_dots(x, local_users, q, ur.cols)
                xf, qf = x[:, free_x], q[:, free_y]
                pen = model.reg_ * (ur.counts() @ np.einsum("ij,ij->i", xf, xf))
                if r == 0:  # the item penalty once, from the gathered factors
                    pen += model.reg_ * (item_counts @ np.einsum("ij,ij->i", qf, qf))
            sse, pen, visits = ex.sum([err @ err, pen, loop.visits])
            loss = float(sse + pen)
            record = {"objective": loss, "train_rmse": float(np.sqrt(sse / data["n"])), "step_size": model._rate,
                      "visits": int(visits), "blocks": int(homes.size)}
            model._rate = dsgd.next_rate(v.step, v.lr, model._rate, epoch, loss, model._previous, v.decay)
            model._previous = loss
            model._local_users = x
            model._after_iteration(data, ex, epoch, None, q, record, clock, track)
    finally:
        comm.Free()
    return ex.gather(x), q
